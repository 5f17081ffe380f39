-- The event streams of shared.backends.redis, for every script that appends to them: the
-- backend's own append and an app's scripts (chat's sends), so that an app's writes and its
-- events happen in one atomic step, with one retention algorithm (issue 17.4).
--
-- A stream entry's fields: d = data, e = event name (absent: the default event), m = the app's
-- mark (optional; handed back to on_trim when the entry is trimmed). The caller passes the
-- backend's retention as the LAST two ARGV (maxlen, trim slack: RedisBackend.stream_script does)
-- and they are taken off here, so a script's own ARGV are exactly what its caller passed.
local SSE_SLACK = tonumber(table.remove(ARGV))
local SSE_MAXLEN = tonumber(table.remove(ARGV))

-- Append one event to `stream` and return its id. Past SSE_MAXLEN + SSE_SLACK entries, the oldest
-- are trimmed in one batch down to SSE_MAXLEN (XTRIM MINID), and the last trimmed id is recorded
-- (XSETID ... MAXDELETEDID): the backend's read_after tells "evicted" from "unknown" by it.
-- on_trim(mark) runs for each trimmed entry that has a mark (an app forgetting what it belonged to).
local function sse_append(stream, data, event, mark, on_trim)
  local fields = {'d', data}
  if event then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = event
  end
  if mark then
    fields[#fields + 1] = 'm'
    fields[#fields + 1] = mark
  end
  local id = redis.call('XADD', stream, '*', unpack(fields))
  local len = redis.call('XLEN', stream)
  if len > SSE_MAXLEN + SSE_SLACK then
    local drop = len - SSE_MAXLEN
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', drop + 1)
    if on_trim then
      for i = 1, drop do
        local f = head[i][2]
        for j = 1, #f, 2 do
          if f[j] == 'm' then on_trim(f[j + 1]) end
        end
      end
    end
    redis.call('XTRIM', stream, 'MINID', head[drop + 1][1])
    redis.call('XSETID', stream, id, 'MAXDELETEDID', head[drop][1])
  end
  return id
end
