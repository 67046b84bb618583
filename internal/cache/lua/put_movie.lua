-- Cache what a store read returned, unless the cached copy or the index's
-- version fence already holds a newer version of the movie. An equal version
-- may refresh the entry (it holds the same movie). Returns 1 if written.
local entry = KEYS[1]          -- movie:<id>, a hash {v, b, e, d}
local versions = KEYS[2]       -- top:version, id -> last version applied (the fences)
local version = ARGV[1]        -- the store's version; -1 for a movie that does not exist
local body = ARGV[2]           -- the serialized Movie; empty for a negative entry
local movie_id = ARGV[3]
local ttl_ms = ARGV[4]
local expires_at_ms = ARGV[5]  -- now + ttl_ms, in ms since the epoch (read by XFetch)
local load_ms = ARGV[6]        -- how long the store read took (paces XFetch)

local v = tonumber(version)
local cached = tonumber(redis.call('HGET', entry, 'v') or '-2')
local known = tonumber(redis.call('HGET', versions, movie_id) or '-2')
if cached > v or known > v then return 0 end
redis.call('DEL', entry)
if body == '' then
  redis.call('HSET', entry, 'v', version, 'e', expires_at_ms, 'd', load_ms)
else
  redis.call('HSET', entry, 'v', version, 'b', body, 'e', expires_at_ms, 'd', load_ms)
end
redis.call('PEXPIRE', entry, ttl_ms)
return 1
