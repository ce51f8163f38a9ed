"""Sessions on Redis or Redis Cluster: `RedisSessionStore` over `KeyLayout` and the Lua scripts.

``keys.py`` names every key, ``record.py`` is the record string (and the rows Redis returns),
``scripts/*.lua`` do the work (``scripts.py`` registers them and holds their one `Result` code),
``store.py`` is the store. ``client.py`` builds its client, ``runner.py`` runs its calls
(deadline, error mapping, script and pipeline retries), ``indexes.py`` builds the index and
scope commands sent beside the scripts (on a Cluster, those of other slots).
"""

from .keys import KeyLayout
from .scripts import Result
from .store import DEFAULT_PREFIX, RedisSessionStore

__all__ = ["DEFAULT_PREFIX", "KeyLayout", "RedisSessionStore", "Result"]
