-- Release a lock only if this caller still holds it (its token is the value).
local lock = KEYS[1]           -- lock:<name>
local token = ARGV[1]

if redis.call('GET', lock) == token then return redis.call('DEL', lock) end
return 0
