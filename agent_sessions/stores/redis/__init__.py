"""Sessions on Redis or Redis Cluster: `RedisSessionStore` over `KeyLayout` and the Lua scripts.

``keys.py`` names every key, ``record.py`` is the record string, ``scripts/*.lua`` do the work
(``scripts.py`` registers them and holds their one `Result` code), ``store.py`` is the store.
"""

from .keys import KeyLayout
from .scripts import Result
from .store import DEFAULT_PREFIX, RedisSessionStore

__all__ = ["DEFAULT_PREFIX", "KeyLayout", "RedisSessionStore", "Result"]
