-- Theaters within a radius, nearest first (by Redis' own distance): a flat
-- list of (id, stored value), the value being 16 bytes of exact latitude and
-- longitude, then the serialized Theater. False when the index is missing or
-- in another format.
local theaters = KEYS[1]       -- geo:theaters, the GEO set of theater ids
local details = KEYS[2]        -- geo:theater, id -> coordinates + serialized Theater
local ready = KEYS[3]          -- geo:ready, the format the index was built in
local longitude = ARGV[1]
local latitude = ARGV[2]
local radius_km = ARGV[3]
local count = ARGV[4]
local format = ARGV[5]

if redis.call('GET', ready) ~= format then return false end
local ids = redis.call('GEOSEARCH', theaters, 'FROMLONLAT', longitude, latitude,
  'BYRADIUS', radius_km, 'km', 'ASC', 'COUNT', count)
if #ids == 0 then return {} end
local values = redis.call('HMGET', details, unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = values[i]
end
return out
