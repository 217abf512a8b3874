"""What a run IS, in Redis: the store's face.

Every change to a run is one Lua script (``lua/``), on the server's clock; no module outside
this folder spells a key. ``redis.py`` holds the writes, ``records.py`` the reads,
``claim.py`` the reply of a claim, ``embedded.py`` the embedded server, ``urls.py`` how the
Redis URL is shared with Celery.
"""

from sagaline.store.claim import Claim
from sagaline.store.embedded import EmbeddedRedis, EmbeddedRedisError
from sagaline.store.redis import OutboxClaim, RedisStore, Rollback

__all__ = ["Claim", "EmbeddedRedis", "EmbeddedRedisError", "OutboxClaim", "RedisStore",
           "Rollback"]
