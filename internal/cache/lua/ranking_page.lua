-- Redis Cluster: one page of one ranking after a (score, id) cursor, in
-- (score, id) order: a flat list of (id, score). The movies' copies are in
-- other slots (the caller reads them), and so is top:ready.
local ranking = KEYS[1]        -- top:{all} or top:genre:{g:<genre>}
local after_score = ARGV[1]    -- empty: the first page
local after_id = ARGV[2]
local limit = ARGV[3]

local count = tonumber(limit)
if after_score == '' then
  return redis.call('ZRANGE', ranking, 0, count - 1, 'WITHSCORES')
end
local s0 = tonumber(after_score)
local page = {}
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
return page
