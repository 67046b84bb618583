-- One page of a ranking after a (score, id) cursor, in (score, id) order,
-- with each movie's cached copy (false when not cached): a flat list of
-- (id, score, movie). False when the index is missing or was built with
-- another ranking formula.
local ready = KEYS[1]          -- top:ready, the tag of the formula the index was built with
local ranking = KEYS[2]        -- top:all or top:genre:<genre>
local tag = ARGV[1]
local after_score = ARGV[2]    -- empty: the first page
local after_id = ARGV[3]
local limit = ARGV[4]
local movie_prefix = ARGV[5]   -- movie:, to read each movie's cached copy

if redis.call('GET', ready) ~= tag then return false end
local count = tonumber(limit)
local page = {}
if after_score == '' then
  page = redis.call('ZRANGE', ranking, 0, count - 1, 'WITHSCORES')
else
  local s0 = tonumber(after_score)
  local offset = 0
  while #page < 2 * count do
    local batch = redis.call('ZRANGE', ranking, after_score, '+inf', 'BYSCORE', 'LIMIT', offset, count, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      if tonumber(batch[i + 1]) > s0 or batch[i] > after_id then
        page[#page + 1] = batch[i]
        page[#page + 1] = batch[i + 1]
        if #page >= 2 * count then break end
      end
    end
    offset = offset + count
  end
end
local out = {}
for i = 1, #page, 2 do
  out[#out + 1] = page[i]
  out[#out + 1] = page[i + 1]
  out[#out + 1] = redis.call('HGET', movie_prefix .. page[i], 'b')
end
return out
