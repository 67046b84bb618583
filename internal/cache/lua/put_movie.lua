-- Cache what a store read returned, if the caller still holds the fill lease
-- it took before that read, and unless the cached copy or the index's version
-- fence already holds a newer version of the movie. An equal version may
-- refresh the entry (it holds the same movie). The lease ends here.
--
-- The lease is what makes a fill prove it is current: every write of the
-- movie deletes it, and so does anything that loses Redis' data (FLUSHALL,
-- eviction, a restart without persistence, a failover to a replica that never
-- saw it), which also takes the version fences away. Returns 1 if written, 0
-- if the lease is gone, -1 if a newer version is known (the reason a trace shows).
local entry = KEYS[1]          -- movie:<id>, a hash {v, b, e, d}
local versions = KEYS[2]       -- top:version, id -> last version applied (the fences)
local lease = KEYS[3]          -- lease:<id>, the fill lease (a random token, with a TTL)
local version = ARGV[1]        -- the store's version; -1 for a movie that does not exist
local body = ARGV[2]           -- the serialized Movie; empty for a negative entry
local movie_id = ARGV[3]
local ttl_ms = ARGV[4]
local expires_at_ms = ARGV[5]  -- now + ttl_ms, in ms since the epoch (read by XFetch)
local load_ms = ARGV[6]        -- how long the store read took (paces XFetch)
local token = ARGV[7]          -- the lease this caller took before its store read

if redis.call('GET', lease) ~= token then return 0 end
redis.call('DEL', lease)
local v = tonumber(version)
local cached = tonumber(redis.call('HGET', entry, 'v') or '-2')
local known = tonumber(redis.call('HGET', versions, movie_id) or '-2')
if cached > v or known > v then return -1 end
redis.call('DEL', entry)
if body == '' then
  redis.call('HSET', entry, 'v', version, 'e', expires_at_ms, 'd', load_ms)
else
  redis.call('HSET', entry, 'v', version, 'b', body, 'e', expires_at_ms, 'd', load_ms)
end
redis.call('PEXPIRE', entry, ttl_ms)
return 1
