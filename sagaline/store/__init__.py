"""What a run IS, in Redis: the store's face.

Every change to a run is one Lua script (``lua/``), on the server's clock; no module outside
this folder spells a key. ``redis.py`` holds the writes, ``records.py`` the reads,
``replies.py`` the scripts' answers, ``embedded.py`` the embedded server, ``urls.py`` how the
Redis URL is shared with Celery.
"""

from sagaline.store.embedded import EmbeddedRedis, EmbeddedRedisError
from sagaline.store.redis import RedisStore
from sagaline.store.replies import Claim, GroupSpec, OutboxClaim, Rollback

__all__ = ["Claim", "EmbeddedRedis", "EmbeddedRedisError", "GroupSpec", "OutboxClaim",
           "RedisStore", "Rollback"]
