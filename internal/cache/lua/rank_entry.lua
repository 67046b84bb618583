-- Redis Cluster: one movie's entry in one ranking (a sorted set in its own
-- slot), applied only if this ranking has seen no newer version of the movie:
-- updates of several rankings after one write land one slot at a time, and an
-- update that arrives late (a slow writer, a repair, a rebuild) cannot undo a
-- newer one. Removals are remembered as versions too. Returns 1 if applied.
local ranking = KEYS[1]        -- top:{all} or top:genre:{g:<genre>}
local versions = KEYS[2]       -- <ranking>:version, id -> last version applied here
local movie_id = ARGV[1]
local version = ARGV[2]
local score = ARGV[3]          -- minus the rank score (best first); empty: not in this ranking

local known = tonumber(redis.call('HGET', versions, movie_id) or '-2')
if known >= tonumber(version) then return 0 end
redis.call('HSET', versions, movie_id, version)
if score == '' then
  redis.call('ZREM', ranking, movie_id)
else
  redis.call('ZADD', ranking, score, movie_id)
end
return 1
