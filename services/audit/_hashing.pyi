# The C module beside it (services/audit/_hashing.c); services.audit.hashing documents it.
from array import array
from typing import TypeAlias

_Buffer: TypeAlias = bytes | bytearray | memoryview | array[int]

def sha256_segments(data: _Buffer, bounds: _Buffer, prefix: _Buffer = ..., /) -> bytes: ...
def rfc6962_roots(leaves: _Buffer, width: int, /) -> bytes: ...
