-- Apply one movie version after a write (or a repair, or an index rebuild):
-- replace its cached copy (when a body is given and nothing newer is cached
-- or fenced) and its TopRated entries (when the indexes hold an older
-- version). Writes, repairs and rebuilds may arrive in any order and the
-- newest version still wins. A write of the movie (a body given) revokes its
-- fill lease: a store read that began before it must not fill. Returns 1 if
-- anything changed.
local versions = KEYS[1]       -- top:version, id -> last version applied (the fences, no TTL)
local genres_of = KEYS[2]      -- top:genres, id -> its genres, "\n"-separated
local ranked = KEYS[3]         -- top:all, the sorted set of every ranked movie
local entry = KEYS[4]          -- movie:<id>
local lease = KEYS[5]          -- lease:<id>, the fill lease
local movie_id = ARGV[1]
local version = ARGV[2]
local score = ARGV[3]          -- minus the rank score (best first); empty: not ranked
local genres = ARGV[4]         -- "\n"-separated, normalized
local genre_prefix = ARGV[5]   -- top:genre:, one sorted set per genre
local body = ARGV[6]           -- the serialized Movie; empty: update the indexes only
local ttl_ms = ARGV[7]
local expires_at_ms = ARGV[8]

if body ~= '' then redis.call('DEL', lease) end
local v = tonumber(version)
local known = tonumber(redis.call('HGET', versions, movie_id) or '-2')
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
if known >= v then return applied end
redis.call('HSET', versions, movie_id, version)
local old = redis.call('HGET', genres_of, movie_id)
if old then
  for g in string.gmatch(old, '[^\n]+') do redis.call('ZREM', genre_prefix .. g, movie_id) end
end
redis.call('ZREM', ranked, movie_id)
redis.call('HDEL', genres_of, movie_id)
if score ~= '' then
  redis.call('ZADD', ranked, score, movie_id)
  if genres ~= '' then
    for g in string.gmatch(genres, '[^\n]+') do redis.call('ZADD', genre_prefix .. g, score, movie_id) end
    redis.call('HSET', genres_of, movie_id, genres)
  end
end
return 1
