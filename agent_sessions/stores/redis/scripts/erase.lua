-- Erase sessions of one user and, with its keys, the user scope (`erase_user`).
-- KEYS: ARGV[1] keys per session (3: record, history, window; 4 on a single node: and its
-- expiry shard, whose entry the script then removes, with the user index entry and, for a
-- session it deleted, the listing shard entry, as delete.lua does); then, if ARGV[2] is '1', the user index and the user scope, last.
-- ARGV[3] the user id, ARGV[4] its user hash; ARGV[5...] (a cluster) session ids to remove from
-- the user index. A record owned by someone else (bound to another user meanwhile) is left;
-- an unreadable one is left with its index entries (cleanup and the logs report it).
-- Returns {sessions deleted, history entries deleted, user scope keys deleted, records left}.
local per, with_user, uid, uhash = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3], ARGV[4]
local count = math.floor((#KEYS - (with_user and 2 or 0)) / per)
local idx = with_user and KEYS[#KEYS - 1]
local sessions, entries, scope_keys, left = 0, 0, 0, 0
for i = 0, count - 1 do
  local rec_key, hist_key, win_key = KEYS[per * i + 1], KEYS[per * i + 2], KEYS[per * i + 3]
  local rec = redis.call('GET', rec_key)
  local h = rec and header(rec)
  if rec and not h then
    left = left + 1
  else
    local _, sid = split_key(rec_key)
    if h and owner(rec, h) == uid then
      entries = entries + redis.call('LLEN', hist_key)
      redis.call('DEL', rec_key, hist_key, win_key)
      sessions = sessions + 1
      if per == 4 then redis.call('ZREM', list_key(KEYS[per * i + 4]), sid) end
    elseif not rec then
      redis.call('DEL', hist_key, win_key)
      if per == 4 then redis.call('ZREM', list_key(KEYS[per * i + 4]), sid) end
    end
    -- The user's entries, whoever owns the record now (a rebound session's are stale).
    if per == 4 then redis.call('ZREM', KEYS[per * i + 4], sid .. ':' .. uhash) end
    if idx then redis.call('ZREM', idx, sid) end
  end
end
if with_user then
  local scope = KEYS[#KEYS]
  if #ARGV >= 5 then chunked('ZREM', idx, 5, #ARGV, 1000) end
  scope_keys = redis.call('HLEN', scope) - redis.call('HEXISTS', scope, '~owner')
  redis.call('DEL', scope)
end
return {sessions, entries, scope_keys, left}
