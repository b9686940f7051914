"""The Lua scripts of the leases (``worker/leases.py``), one per step that must be atomic.

Each declares itself with ``#!lua``: Redis then refuses the whole script up front when it is out of
memory or read-only (``allow-oom`` for the heartbeat only, which writes almost nothing), instead of
failing half-way after a pop. Keys a script derives (a consumer's held hash, a queue's wake list) are
not declared: standalone Redis and Sentinel allow that; Cluster, which kombu does not support
either, would not.
"""

from __future__ import annotations

from contract.broker import PRIORITY_SEP, WAKE_TOKENS_MAX
from contract.keys import HELD_PREFIX, WAKE_PREFIX

_LUA_SEP = "".join(f"\\{ord(c)}" for c in PRIORITY_SEP)  # as a Lua escape: no raw control bytes in the source

# Shared by the scripts: push a wake token for the queue of a kombu list; split a held entry.
_WAKE = f"""
local function wake_key(list_key)
  local q = list_key
  local at = string.find(list_key, '{_LUA_SEP}', 1, true)
  if at then q = string.sub(list_key, 1, at - 1) end
  return '{WAKE_PREFIX}' .. q
end
local function wake(list_key)
  redis.call('LPUSH', wake_key(list_key), 1)
  redis.call('LTRIM', wake_key(list_key), 0, {WAKE_TOKENS_MAX - 1})
end
local function unwake(list_key)
  redis.call('DEL', wake_key(list_key))
end
local function split(value)
  local nl = string.find(value, '\\n', 1, true)
  return string.sub(value, 1, nl - 1), string.sub(value, nl + 1)
end
"""

# KEYS[1] held hash, KEYS[2..] lists in fetch order.  ARGV[1] fetch id.
FETCH = (
    "#!lua\n"
    + _WAKE
    + """
for i = 2, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    redis.call('HSET', KEYS[1], ARGV[1], KEYS[i] .. '\\n' .. item)
    for j = 2, #KEYS do
      if redis.call('LLEN', KEYS[j]) > 0 then wake(KEYS[j]) break end
    end
    return {KEYS[i], item}
  end
end
-- Nothing queued: what tokens are left are stale (a later publish pushes its message and a new token
-- together), and would only make idle workers wake and look again.
for i = 2, #KEYS do unwake(KEYS[i]) end
return false
"""
)

# KEYS[1] held hash.  ARGV[1] fetch id, ARGV[2] '1' = to the back of the queue (else the front).
REQUEUE = (
    "#!lua\n"
    + _WAKE
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local src, item = split(value)
if ARGV[2] == '1' then redis.call('LPUSH', src, item) else redis.call('RPUSH', src, item) end
redis.call('HDEL', KEYS[1], ARGV[1])
wake(src)
return 1
"""
)

# KEYS[1] consumers, KEYS[2] meta.  ARGV[1] consumer id, ARGV[2] meta JSON.  1 = it was not registered.
HEARTBEAT = """#!lua flags=allow-oom
local t = redis.call('TIME')
local fresh = redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return fresh
"""

# KEYS[1] consumers, KEYS[2] meta, KEYS[3] metrics.
# ARGV[1] dead after (s), ARGV[2] '1' = renew every lease instead of judging, ARGV[3..] consumers whose
# process is known to be gone. Returns {consumer, fetch id, reason, argsrepr} per message put back.
RECOVER = (
    "#!lua\n"
    + _WAKE
    + f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dead, reason = {{}}, {{}}
if ARGV[2] == '1' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do redis.call('ZADD', KEYS[1], now, id) end
else
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))) do
    dead[#dead + 1] = id
    reason[id] = 'lease_expired'
  end
end
for i = 3, #ARGV do
  if not reason[ARGV[i]] then
    dead[#dead + 1] = ARGV[i]
    reason[ARGV[i]] = 'process_gone'
  end
end
local out = {{}}
for _, id in ipairs(dead) do
  local held = '{HELD_PREFIX}' .. id
  local entries = redis.call('HGETALL', held)
  for j = 1, #entries, 2 do
    local src, item = split(entries[j + 1])
    redis.call('RPUSH', src, item)
    wake(src)
    redis.call('HINCRBY', KEYS[3], 'recovered|' .. reason[id], 1)
    out[#out + 1] = id
    out[#out + 1] = entries[j]
    out[#out + 1] = reason[id]
    out[#out + 1] = string.match(item, '"argsrepr": "([^"]*)"') or ''
  end
  redis.call('DEL', held)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return out
"""
)

# KEYS[1] consumers, KEYS[2] meta, KEYS[3] held.  ARGV[1] consumer id. Leave only if nothing is held.
RETIRE = """#!lua
if redis.call('HLEN', KEYS[3]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
