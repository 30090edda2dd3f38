# The C module beside it (services/event_store/_log_reader.c); log_blobs.py documents it.
def read_range(
    path: str,
    events_table: str,
    chain_table: str,
    first: int,
    last: int,
    previous_position: int,
    previous_link: bytes,
    /,
) -> tuple[bool, bytes, bytes]: ...
def open_v2_address() -> int: ...
def library_version() -> str: ...
