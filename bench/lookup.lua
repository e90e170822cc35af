-- wrk script: each request asks for a random path from the file given after `--`, and the
-- summary is printed as one JSON line for bench/run.py to read.
local paths = {}
local host = nil

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  host = args[2]
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  local headers = nil
  if host then
    headers = { Host = host }
  end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"status_errors": %d, "bytes": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    summary.errors.status, summary.bytes))
end
