-- Shared by every script; scripts.py puts the result codes of `Result` (ABSENT, DONE, ...)
-- above it. A record starts with a one-line header written by the store:
--   R2 <version> <history seq> <last access> <expiry|-> <write token> <user hash|-> <user id bytes|-1>
-- then the user id, then the encoded record. Floats are never formatted by Lua (it would round
-- them): header fields are copied as the strings Python wrote and compared after `tonumber`.
-- LEGACY_HEADER: the previous release wrote 'R1', without the user hash:
--   R1 <version> <history seq> <last access> <expiry|-> <write token> <user id bytes|-1>
-- (same keys, index members and history rows). `header` reads both; an R1 record with a user
-- has `uhash = false` until `known_hash` fills it in. Every save and touch rewrites it as R2.
local function header(rec)
  local v, s, la, e, tok, uh, ul, pos = string.match(
    rec, '^R2 (%d+) (%d+) (%S+) (%S+) (%S+) (%S+) (%-?%d+)\n()')
  if not v then
    v, s, la, e, tok, ul, pos = string.match(rec, '^R1 (%d+) (%d+) (%S+) (%S+) (%S+) (%-?%d+)\n()')
    if not v then return nil end
    uh = tonumber(ul) < 0 and '-'
  end
  return {version = v, seq = s, accessed = la, expiry = e, token = tok, uhash = uh,
          ulen = tonumber(ul), body = pos}
end

local function live(h, now)
  return h.expiry == '-' or tonumber(h.expiry) > now
end

local function owner(rec, h)
  if h.ulen < 0 then return false end
  return string.sub(rec, h.body, h.body + h.ulen - 1)
end

-- LEGACY_HEADER: Lua has no sha256, so a script needing the user hash of an R1 record takes
-- it from its last two ARGV, the user id and its `user_hash` (used only if that id is the
-- record's owner; both '' when not known). False: the script must answer {LEGACY, owner}
-- before changing anything, and the store calls it again with them (`_script` in store.py).
local function known_hash(rec, h)
  if h.uhash then return true end
  if ARGV[#ARGV] ~= '' and owner(rec, h) == ARGV[#ARGV - 1] then h.uhash = ARGV[#ARGV] end
  return h.uhash ~= false
end

-- The key prefix and the session id of a session key (the prefix holds no braces).
local function split_key(key)
  return string.match(key, '^(.-){(.-)}')
end

-- A user's keys from the hash in a header: mirrors `KeyLayout.user_index` / `user_scope`.
-- Only scripts on a single node call it (on a cluster these keys live in other slots).
local function user_key(prefix, uhash, kind)
  return prefix .. '{~u:' .. uhash .. '}:' .. kind
end

-- The index score of a header: its expiry, '+inf' for none.
local function score(h)
  if h.expiry == '-' then return '+inf' end
  return h.expiry
end

local function set_ttl(key, pttl)
  if pttl > 0 then redis.call('PEXPIRE', key, pttl) else redis.call('PERSIST', key) end
end

local function shard_member(sid, h)
  if h.uhash == '-' then return sid end
  return sid .. ':' .. h.uhash
end

-- The listing shard beside an expiry shard ('...:exp' -> '...:ids', same slot): mirrors
-- `KeyLayout.list_shard`.
local function list_key(shard)
  return string.sub(shard, 1, -4) .. 'ids'
end

-- Score the session of `key` (its record) in its expiry shard and in its user's index, and
-- list it in its listing shard.
local function index(key, shard, h)
  local prefix, sid = split_key(key)
  redis.call('ZADD', shard, score(h), shard_member(sid, h))
  if h.uhash ~= '-' then redis.call('ZADD', user_key(prefix, h.uhash, 'idx'), score(h), sid) end
  redis.call('ZADD', list_key(shard), 0, sid)
end

local function unindex(key, shard, h)
  local prefix, sid = split_key(key)
  redis.call('ZREM', shard, shard_member(sid, h))
  if h.uhash ~= '-' then redis.call('ZREM', user_key(prefix, h.uhash, 'idx'), sid) end
  redis.call('ZREM', list_key(shard), sid)
end

-- `command key ARGV[first..last]`, at most `step` arguments per call (Lua's unpack limit).
local function chunked(command, key, first, last, step)
  local result = 0
  while first <= last do
    local upto = math.min(first + step - 1, last)
    result = redis.call(command, key, unpack(ARGV, first, upto))
    first = upto + 1
  end
  return result
end

-- Apply one scope change to the hash `key`, read from ARGV at `i`: the owner ('' for the app
-- scope), the number of sets and their field/value pairs, the number of deletes and their
-- fields. A user scope keeps its owner in field '~owner'; one left with nothing else is
-- deleted. Returns the ARGV position after the change.
local function apply_scope(key, i)
  local who = ARGV[i]
  local sets = tonumber(ARGV[i + 1])
  i = i + 2
  if sets > 0 then
    if who ~= '' then redis.call('HSET', key, '~owner', who) end
    chunked('HSET', key, i, i + 2 * sets - 1, 1000)
    i = i + 2 * sets
  end
  local deletes = tonumber(ARGV[i])
  i = i + 1
  if deletes > 0 then
    chunked('HDEL', key, i, i + deletes - 1, 1000)
    i = i + deletes
    if redis.call('HLEN', key) <= 1 and redis.call('HEXISTS', key, '~owner') == 1 then
      redis.call('DEL', key)
    end
  end
  return i
end
