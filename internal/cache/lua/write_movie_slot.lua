-- Redis Cluster: the part of a write (or repair, or index rebuild) that lives
-- in the movie's own slot: its cached copy (when a body is given and nothing
-- newer is cached or fenced), its version fence and the genres it is indexed
-- under. The sorted sets are other slots: the caller updates each of them
-- afterwards (rank_entry.lua), each checking the version on its own, so they
-- may be updated in any order, more than once, and the newest version wins.
-- A write of the movie (a body given) revokes its fill lease.
--
-- Returns {applied, index, previous}: applied 1 if the copy was replaced;
-- index 1 if the caller must update the rankings (this version is the newest
-- the fence knows: first seen now, or seen before by a write that may not have
-- finished them); previous: the genres of every earlier version,
-- "\n"-separated, whose sorted sets it must leave (unless it is still in them).
local fence = KEYS[1]          -- version:{<id>}, id -> last version applied (no TTL)
local genres_of = KEYS[2]      -- genres:{<id>}, {g: its genres, p: every genre it had before}
local entry = KEYS[3]          -- movie:{<id>}
local lease = KEYS[4]          -- lease:{<id>}, the fill lease
local movie_id = ARGV[1]
local version = ARGV[2]
local genres = ARGV[3]         -- "\n"-separated, normalized
local body = ARGV[4]           -- the serialized Movie; empty: the indexes only
local ttl_ms = ARGV[5]
local expires_at_ms = ARGV[6]

if body ~= '' then redis.call('DEL', lease) end
local v = tonumber(version)
local known = tonumber(redis.call('HGET', fence, movie_id) or '-2')
local applied = 0
if body ~= '' and known <= v then
  local cached = tonumber(redis.call('HGET', entry, 'v') or '-2')
  if cached < v then
    redis.call('DEL', entry)
    redis.call('HSET', entry, 'v', version, 'b', body, 'e', expires_at_ms, 'd', '0')
    redis.call('PEXPIRE', entry, ttl_ms)
    applied = 1
  end
end
if known > v then return {applied, 0, ''} end
if known < v then
  -- p keeps every genre of every earlier version, not only the last one's: a
  -- writer that died before leaving its old rankings is covered by the next.
  local before = {}
  local seen = {}
  local earlier = (redis.call('HGET', genres_of, 'p') or '') .. '\n' .. (redis.call('HGET', genres_of, 'g') or '')
  for g in string.gmatch(earlier, '[^\n]+') do
    if not seen[g] then
      seen[g] = true
      before[#before + 1] = g
    end
  end
  redis.call('HSET', fence, movie_id, version)
  redis.call('HSET', genres_of, 'g', genres, 'p', table.concat(before, '\n'))
end
return {applied, 1, redis.call('HGET', genres_of, 'p') or ''}
