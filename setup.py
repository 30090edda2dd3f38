"""What pyproject.toml cannot say yet without an experimental table: verify's two C modules
(issue #15, ADR 33), services/audit/_hashing.c (SHA-256 over many pieces, with OpenSSL) and
services/event_store/_log_reader.c (a range of a SQLite store read into buffers, with the
same SQLite library as Python's sqlite3). Each is built where a compiler and the library's
headers are found; elsewhere the install goes on without it (``optional``) and verify runs
the Python code it replaces, which gives the same results, slower."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.audit._hashing",
            sources=["services/audit/_hashing.c"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "services.event_store._log_reader",
            sources=["services/event_store/_log_reader.c"],
            libraries=["sqlite3", "crypto"],
            optional=True,
        ),
    ]
)
