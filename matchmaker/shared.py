"""The client table every host shares, kept in Redis by Lua scripts.

Each script is one atomic step: a decision that touches two clients (pair
them, end their session, forget a client or a whole host) reads and writes
the table and appends the news for the other host to its stream, all at once,
so two hosts racing for one FREE client get one ``OK`` and one ``BUSY``
(cf. Centrifugo's Redis presence scripts). docs/CLUSTER.md lists the keys.

A host knows its own clients' addresses and sessions in its own
``ClientTable``; here are only what other hosts need: who holds which id,
since when (wall clock, microseconds), who is in which session with whom.
Every script but ``BEAT`` and ``SYNC`` checks first that the calling host is
still registered under its token: a host the others took for dead must
re-register (``SYNC``) before it decides anything again.

Every decision (CONNECT, MATCH, CANCEL, NAME, GOODBYE, DROP) also returns the *mark* of the
caller's stream: the last entry on it when the decision was made. The news
up to the mark happened before the decision and is applied first; what comes
after it, after. So a client hears of its sessions in the order Redis decided
them, as on one host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "mm:"
GROUP = "hosts"  # the consumer group on every host's stream

# Helpers every script starts with. ``tell`` appends to a live host's stream;
# ``unpair`` ends a client's session (and its partner's, if the partner is in
# it) and tells the partner's host unless that is ``node``; ``forget`` frees an
# id; ``reap`` forgets a whole host.
_PRELUDE = """
local P = 'mm:'
local function tell(node, msg)
  if redis.call('HEXISTS', P..'nodes', node) == 1 then
    redis.call('XADD', P..'inbox:'..node, '*', 'm', msg)
  end
end
local function unpair(cid, node)
  local sid = redis.call('HGET', P..'session', cid)
  if not sid then return false end
  local peer = redis.call('HGET', P..'peer', cid) or '0'
  redis.call('HDEL', P..'session', cid)
  redis.call('HDEL', P..'peer', cid)
  redis.call('SREM', P..'tentative', cid)
  if redis.call('HGET', P..'session', peer) == sid then
    redis.call('HDEL', P..'session', peer)
    redis.call('HDEL', P..'peer', peer)
    redis.call('SREM', P..'tentative', peer)
    redis.call('HSET', P..'last_peer', cid, peer..'|'..(redis.call('HGET', P..'since', peer) or ''),
      peer, cid..'|'..(redis.call('HGET', P..'since', cid) or ''))
    local pnode = redis.call('HGET', P..'owner', peer)
    if pnode and pnode ~= node then tell(pnode, 'E|'..peer..'|'..sid..'|'..cid) end
  end
  return {sid, peer}
end
local function unname(cid)
  local name = redis.call('HGET', P..'name', cid)
  if not name then return end
  redis.call('HDEL', P..'name', cid)
  if redis.call('HGET', P..'names', string.lower(name)) == cid then
    redis.call('HDEL', P..'names', string.lower(name))
  end
end
local function forget(cid, node)
  local owner = redis.call('HGET', P..'owner', cid)
  unpair(cid, node)
  redis.call('HDEL', P..'owner', cid)
  redis.call('HDEL', P..'since', cid)
  redis.call('HDEL', P..'last_peer', cid)
  redis.call('HDEL', P..'last_sid', cid)
  redis.call('ZREM', P..'line', cid)
  redis.call('SREM', P..'new', cid)
  unname(cid)
  if owner then redis.call('SREM', P..'clients:'..owner, cid) end
  redis.call('ZADD', P..'free', cid, cid)
end
local function reap(node)
  local cids = redis.call('SMEMBERS', P..'clients:'..node)
  for _, cid in ipairs(cids) do forget(cid, node) end
  redis.call('DEL', P..'clients:'..node, P..'inbox:'..node, P..'done:'..node)
  redis.call('ZREM', P..'alive', node)
  redis.call('HDEL', P..'nodes', node)
  return #cids
end
local function pair(req, target, tnode, node)
  local sid = tostring(redis.call('INCR', P..'sid'))
  redis.call('HSET', P..'session', req, sid, target, sid)
  redis.call('HSET', P..'peer', req, target, target, req)
  redis.call('ZREM', P..'line', req, target)
  redis.call('SREM', P..'new', req, target)
  if tnode ~= node then tell(tnode, 'P|'..target..'|'..sid..'|'..req..'|'..node) end
  return sid
end
local function registered(node, token)
  return redis.call('HGET', P..'nodes', node) == token
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function alive(node, ms)
  redis.call('ZADD', P..'alive', now_ms() + tonumber(ms), node)
end
local function mark(node)
  local last = redis.call('XREVRANGE', P..'inbox:'..node, '+', '-', 'COUNT', 1)
  if last[1] then return last[1][1] end
  return '0-0'
end
local function ensure_epoch(epoch, window)
  if redis.call('EXISTS', P..'epoch') == 0 then
    redis.call('SET', P..'epoch', epoch)
    redis.call('SET', P..'rebuild', '1', 'PX', window)
  end
end
local function mine(node, token, cid)
  return registered(node, token) and redis.call('HGET', P..'owner', cid) == node
end
local function talking(cid, sid, node)
  local peer = redis.call('HGET', P..'peer', cid)
  return {'TALKING', peer, sid, redis.call('HGET', P..'owner', peer) or '', mark(node)}
end
"""

#: ARGV: node, token, alive_ms, window_ms, new_epoch.
#: A Redis with no ``epoch`` is new or lost everything: no id is handed out for
#: ``window_ms`` (``rebuild``), the time every live host takes to notice and
#: re-register. A host under an old token is an earlier run of this one: its
#: clients are gone. Any other host whose heartbeat lapsed is reaped: ``alive`` holds
#: each host's deadline on Redis's clock (Centrifugo's presence ZSET). A beat is due
#: every third of ``alive_ms``; if nobody has beaten for half of it (``clock``), Redis
#: itself stood still (stopped, swapped out): every deadline moves by the time lost,
#: and nobody is reaped for it.
#: Sessions taken back by one end only (``tentative``) end once the window is over.
BEAT = """
local node, token = ARGV[1], ARGV[2]
ensure_epoch(ARGV[5], ARGV[4])
local known = redis.call('HGET', P..'nodes', node)
local state = 'OK'
if known ~= token then
  if known then reap(node) end
  state = 'JOIN'
else
  alive(node, ARGV[3])
end
local now = now_ms()
local last = tonumber(redis.call('GET', P..'clock') or now)
redis.call('SET', P..'clock', now)
if now - last > tonumber(ARGV[3]) / 2 then
  -- a beat is due every third of the deadline: the rest of the gap, nobody could beat
  local lost = now - last - math.floor(tonumber(ARGV[3]) / 3)
  local hosts = redis.call('ZRANGE', P..'alive', 0, -1, 'WITHSCORES')
  for i = 1, #hosts, 2 do
    if hosts[i] ~= node then
      redis.call('ZADD', P..'alive', tonumber(hosts[i + 1]) + lost, hosts[i])
    end
  end
end
local reaped = 0
for _, n in ipairs(redis.call('HKEYS', P..'nodes')) do
  local deadline = redis.call('ZSCORE', P..'alive', n)
  if n ~= node and (not deadline or tonumber(deadline) < now) then
    reaped = reaped + reap(n)
  end
end
if redis.call('EXISTS', P..'rebuild') == 0 then
  for _, cid in ipairs(redis.call('SMEMBERS', P..'tentative')) do
    local peer = redis.call('HGET', P..'peer', cid) or '0'
    local sid = redis.call('HGET', P..'session', cid)
    local owner = redis.call('HGET', P..'owner', cid)
    redis.call('HDEL', P..'session', cid)
    redis.call('HDEL', P..'peer', cid)
    if owner and sid then tell(owner, 'E|'..cid..'|'..sid..'|'..peer) end
  end
  redis.call('DEL', P..'tentative')
end
return {state, redis.call('GET', P..'epoch'), reaped}
"""

#: ARGV: node, token, since_us, op. -> {'OK', cid} | {'WAIT'} | {'LOST'}
REGISTER = """
local node = ARGV[1]
if not registered(node, ARGV[2]) then return {'LOST'} end
if redis.call('EXISTS', P..'rebuild') == 1 or redis.call('EXISTS', P..'epoch') == 0 then
  return {'WAIT'}
end
local cid
local low = redis.call('ZPOPMIN', P..'free')
if low[1] then cid = low[1] else cid = tostring(redis.call('INCR', P..'last')) end
redis.call('HSET', P..'owner', cid, node)
redis.call('HSET', P..'since', cid, ARGV[3])
redis.call('SADD', P..'clients:'..node, cid)
return {'OK', cid}
"""

#: ARGV: node, token, requester, target, asked_us, name, op. With a ``name`` (target 0),
#: the target is whoever holds it now (``NONAME`` if nobody).
#: -> {'OK', sid, target_node, target} | {'TALKING', peer, sid, peer_node} | {'SELF'} |
#: {'OFFLINE' or 'BUSY', target} | {'NONAME'} | {'LOST'}, each but LOST with the caller's
#: stream mark last (``mark``: the last entry on it now). Both ends leave the line.
CONNECT = """
local node, req, target = ARGV[1], ARGV[3], ARGV[4]
if not mine(node, ARGV[2], req) then return {'LOST'} end
if ARGV[6] ~= '' then
  target = redis.call('HGET', P..'names', string.lower(ARGV[6]))
  if not target then return {'NONAME', mark(node)} end
end
local sid = redis.call('HGET', P..'session', req)
if sid then return talking(req, sid, node) end
if req == target then return {'SELF', mark(node)} end
local tnode = redis.call('HGET', P..'owner', target)
if not tnode then return {'OFFLINE', target, mark(node)} end
if tonumber(redis.call('HGET', P..'since', target) or '0') > tonumber(ARGV[5]) then
  return {'OFFLINE', target, mark(node)}
end
if redis.call('HEXISTS', P..'session', target) == 1 then return {'BUSY', target, mark(node)} end
return {'OK', pair(req, target, tnode, node), tnode, target, mark(node)}
"""

#: ARGV: node, token, cid, new (1 or 0), waiting_us, op. The checks of ``ClientTable.match``,
#: then the pairing of CONNECT with the longest-waiting client (with ``new``, not the
#: partner of its last session; nor one waiting with NEW whose last partner it was), or
#: into the line, scored by ``waiting_us``.
#: -> {'OK', sid, target_node, target} | {'QUEUED'} | {'WAITING'} | {'TALKING', ...} |
#: {'LOST'}, each but LOST with the stream mark last.
MATCH = """
local node, req, new = ARGV[1], ARGV[3], ARGV[4] == '1'
if not mine(node, ARGV[2], req) then return {'LOST'} end
local sid = redis.call('HGET', P..'session', req)
if sid then return talking(req, sid, node) end
if redis.call('ZSCORE', P..'line', req) then return {'WAITING', mark(node)} end
local last = redis.call('HGET', P..'last_peer', req)
local me = req..'|'..(redis.call('HGET', P..'since', req) or '')
local from = 0
while true do  -- longest-waiting first, a few at a time: the first one usually does
  local some = redis.call('ZRANGE', P..'line', from, from + 31)
  if not some[1] then break end
  for _, other in ipairs(some) do
    local skip = new and last == other..'|'..(redis.call('HGET', P..'since', other) or '')
    if not skip and redis.call('SISMEMBER', P..'new', other) == 1 then
      skip = redis.call('HGET', P..'last_peer', other) == me
    end
    if not skip then
      local tnode = redis.call('HGET', P..'owner', other)
      return {'OK', pair(req, other, tnode, node), tnode, other, mark(node)}
    end
  end
  from = from + 32
end
redis.call('ZADD', P..'line', ARGV[5], req)
if new then redis.call('SADD', P..'new', req) else redis.call('SREM', P..'new', req) end
return {'QUEUED', mark(node)}
"""

#: ARGV: node, token, cid, op. -> {'OK'} | {'NOT_WAITING'} | {'TALKING', ...} | {'LOST'}
CANCEL = """
local node, cid = ARGV[1], ARGV[3]
if not mine(node, ARGV[2], cid) then return {'LOST'} end
local sid = redis.call('HGET', P..'session', cid)
if sid then return talking(cid, sid, node) end
if redis.call('ZREM', P..'line', cid) == 0 then return {'NOT_WAITING', mark(node)} end
redis.call('SREM', P..'new', cid)
return {'OK', mark(node)}
"""

#: ARGV: node, token, cid, name (a valid one, or '' to drop it), op.
#: -> {'OK'} | {'TAKEN'} (another client holds it, in any case) | {'LOST'}
NAME = """
local node, cid, name = ARGV[1], ARGV[3], ARGV[4]
if not mine(node, ARGV[2], cid) then return {'LOST'} end
local key = string.lower(name)
if name ~= '' then
  local holder = redis.call('HGET', P..'names', key)
  if holder and holder ~= cid then return {'TAKEN', mark(node)} end
end
unname(cid)
if name ~= '' then
  redis.call('HSET', P..'name', cid, name)
  redis.call('HSET', P..'names', key, cid)
end
return {'OK', mark(node)}
"""

#: ARGV: node, token, cid, new. A client taken out of the line by a pairing that was
#: called off before it heard of it (its partner left while one of them moved) goes back
#: to the head of the line, if it is still FREE. -> 1 if it did
REQUEUE = """
local node, cid = ARGV[1], ARGV[3]
if not mine(node, ARGV[2], cid) or redis.call('HEXISTS', P..'session', cid) == 1 then return 0 end
if redis.call('ZSCORE', P..'line', cid) then return 0 end
local head = redis.call('ZRANGE', P..'line', 0, 0, 'WITHSCORES')
local score = now_ms() * 1000
if head[2] then score = tonumber(head[2]) - 1 end
redis.call('ZADD', P..'line', score, cid)
if ARGV[4] == '1' then redis.call('SADD', P..'new', cid) end
return 1
"""

#: ARGV: node, token, cid, sid, op. -> {'OK', peer, mark} | {'STALE', mark} | {'LOST'}
GOODBYE = """
local node, cid = ARGV[1], ARGV[3]
if not registered(node, ARGV[2]) or redis.call('HGET', P..'owner', cid) ~= node then
  return {'LOST'}
end
if redis.call('HGET', P..'session', cid) ~= ARGV[4] then return {'STALE', mark(node)} end
local ended = unpair(cid, node)
return {'OK', ended[2], mark(node)}
"""

#: ARGV: node, token, cid..., op -> for each id freed: {cid, session, peer, peer's node} of the
#: session its departure ended ({cid, 0, 0, ''} if it was FREE), then the stream mark.
DROP = """
local node = ARGV[1]
if not registered(node, ARGV[2]) then return {} end
local freed = {}
for i = 3, #ARGV - 1 do
  local cid = ARGV[i]
  if redis.call('HGET', P..'owner', cid) == node then
    local sid = redis.call('HGET', P..'session', cid) or '0'
    local peer = redis.call('HGET', P..'peer', cid) or '0'
    local pnode = redis.call('HGET', P..'owner', peer) or ''
    forget(cid, node)
    freed[#freed + 1] = {cid, sid, peer, pnode}
  end
end
freed[#freed + 1] = mark(node)
return freed
"""

#: ARGV: node, token, alive_ms, window_ms, new_epoch, epoch_known, n, then n times: cid,
#: since_us, sid, peer, heard, name, waiting_us (0: not in the line), new (1 or 0),
#: last_peer, last_sid (the partner and id of its last session; 0 and 0 for none).
#: (A Redis found empty starts its rebuild here as in BEAT.)
#: Registers the host and makes the table say what the host holds: ids it lost to
#: another host are ``refused``; sessions that ended while it could not hear are
#: ``ended``; sessions its clients never heard of are ``paired``. A Redis that
#: lost its table (a new epoch) takes each end of a session back on its host's
#: word, and the session stands once the other end's host says the same.
#: Names and the line come back from the hosts too: a FREE client the host says waits is
#: put in the line at its stamp (if not there already); a name another host's client
#: holds now stays its, and the host's client loses it (``unnamed``), as on one host's
#: restore. So does whom ``MATCH NEW`` skips: once the hosts of both ends of a
#: last session have named it (``mm:last_sid``), each end's ``mm:last_peer`` is
#: the other, unless a session that ended since wrote it already.
#: -> {refused cids, ended {cid, sid, peer}..., paired {cid, sid, peer, peer_node}...,
#: unnamed cids}
SYNC = """
local node, token = ARGV[1], ARGV[2]
local kept = redis.call('GET', P..'epoch') == ARGV[6]
ensure_epoch(ARGV[5], ARGV[4])
redis.call('HSET', P..'nodes', node, token)
alive(node, ARGV[3])
redis.pcall('XGROUP', 'CREATE', P..'inbox:'..node, 'hosts', '0', 'MKSTREAM')
local n = tonumber(ARGV[7])
local mine, refused, ended, paired = {}, {}, {}, {}
local last = tonumber(redis.call('GET', P..'last') or '0')
local top = tonumber(redis.call('GET', P..'sid') or '0')
for i = 0, n - 1 do
  local b = 8 + i * 10
  local cid = ARGV[b]
  local owner = redis.call('HGET', P..'owner', cid)
  if owner and owner ~= node then
    refused[#refused + 1] = cid
  else
    mine[cid] = true
    if not owner then
      redis.call('HSET', P..'owner', cid, node)
      redis.call('HSET', P..'since', cid, ARGV[b + 1])
      redis.call('SADD', P..'clients:'..node, cid)
      redis.call('ZREM', P..'free', cid)
      local c = tonumber(cid)
      if c > last then
        for j = last + 1, c - 1 do redis.call('ZADD', P..'free', j, j) end
        last = c
      end
    end
  end
end
redis.call('SET', P..'last', last)
for _, cid in ipairs(redis.call('SMEMBERS', P..'clients:'..node)) do
  if not mine[cid] then forget(cid, node) end
end
for i = 0, n - 1 do
  local b = 8 + i * 10
  local cid, sid, peer, heard = ARGV[b], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  if mine[cid] then
    top = math.max(top, tonumber(sid), heard)  -- new sessions numbered above all heard of
    local cur = redis.call('HGET', P..'session', cid)
    if sid ~= '0' and cur ~= sid then
      if cur or kept then
        ended[#ended + 1] = {cid, sid, peer}
      else
        local powner = redis.call('HGET', P..'owner', peer)
        local psid = redis.call('HGET', P..'session', peer)
        if psid == sid and redis.call('HGET', P..'peer', peer) == cid then
          redis.call('HSET', P..'session', cid, sid)
          redis.call('HSET', P..'peer', cid, peer)
          redis.call('SREM', P..'tentative', peer)
        elseif psid or (powner and powner ~= node) then
          ended[#ended + 1] = {cid, sid, peer}
        else
          redis.call('HSET', P..'session', cid, sid)
          redis.call('HSET', P..'peer', cid, peer)
          redis.call('SADD', P..'tentative', cid)
        end
      end
    end
    if cur and cur ~= sid then
      if tonumber(cur) > heard then
        local other = redis.call('HGET', P..'peer', cid)
        paired[#paired + 1] = {cid, cur, other, redis.call('HGET', P..'owner', other) or ''}
      else
        unpair(cid, node)
      end
    end
  end
end
if top > tonumber(redis.call('GET', P..'sid') or '0') then redis.call('SET', P..'sid', top) end
local unnamed = {}
for i = 0, n - 1 do
  local b = 8 + i * 10
  local cid, name = ARGV[b], ARGV[b + 5]
  if mine[cid] and redis.call('HGET', P..'name', cid) ~= name then unname(cid) end
end
for i = 0, n - 1 do
  local b = 8 + i * 10
  local cid, name, waiting = ARGV[b], ARGV[b + 5], ARGV[b + 6]
  if mine[cid] then
    if name ~= '' then
      local holder = redis.call('HGET', P..'names', string.lower(name))
      if holder and holder ~= cid and redis.call('HEXISTS', P..'owner', holder) == 1 then
        unnamed[#unnamed + 1] = cid
      else
        redis.call('HSET', P..'name', cid, name)
        redis.call('HSET', P..'names', string.lower(name), cid)
      end
    end
    if waiting == '0' or redis.call('HEXISTS', P..'session', cid) == 1 then
      redis.call('ZREM', P..'line', cid)
      redis.call('SREM', P..'new', cid)
    elseif not redis.call('ZSCORE', P..'line', cid) then
      redis.call('ZADD', P..'line', waiting, cid)
      if ARGV[b + 7] == '1' then redis.call('SADD', P..'new', cid) end
    end
  end
end
if not kept then
  for i = 0, n - 1 do
    local b = 8 + i * 10
    local cid, lpeer = ARGV[b], ARGV[b + 8]
    if mine[cid] and lpeer ~= '0' then
      local lsid = ARGV[b + 9]
      redis.call('HSET', P..'last_sid', cid, lpeer..'|'..lsid)
      if redis.call('HGET', P..'last_sid', lpeer) == cid..'|'..lsid then
        for _, e in ipairs({{cid, lpeer}, {lpeer, cid}}) do
          if redis.call('HEXISTS', P..'last_peer', e[1]) == 0 then
            local since = redis.call('HGET', P..'since', e[2]) or ''
            redis.call('HSET', P..'last_peer', e[1], e[2]..'|'..since)
          end
        end
      end
    end
  end
end
return {refused, ended, paired, unnamed}
"""

#: ARGV: node, token. A host shutting down takes its clients along at once
#: (their partners elsewhere hear ENDED now, not after ``--node-ttl``).
LEAVE = """
if not registered(ARGV[1], ARGV[2]) then return 0 end
return reap(ARGV[1])
"""

SCRIPTS = {
    "beat": BEAT,
    "register": REGISTER,
    "connect": CONNECT,
    "match": MATCH,
    "cancel": CANCEL,
    "name": NAME,
    "requeue": REQUEUE,
    "goodbye": GOODBYE,
    "drop": DROP,
    "sync": SYNC,
    "leave": LEAVE,
}


#: Decisions are made once: a call whose answer was lost (a timeout, this process
#: stopped for a while) is made again with the same ``op`` (the last argument), and
#: gets the answer of the first. One decision at a time per host, so one key each.
ONCE = ("register", "connect", "goodbye", "drop", "match", "cancel", "name")

_ONCE = """
local op = ARGV[#ARGV]
local last = redis.call('GET', P..'done:'..ARGV[1])
if last and string.sub(last, 1, #op + 1) == op..'|' then
  return cjson.decode(string.sub(last, #op + 2))
end
local reply = (function()
%s
end)()
redis.call('SET', P..'done:'..ARGV[1], op..'|'..cjson.encode(reply))
return reply
"""


def source(name: str) -> str:
    if name in ONCE:
        return _PRELUDE + _ONCE % SCRIPTS[name]
    return _PRELUDE + SCRIPTS[name]


def stream(node: str) -> str:
    return f"{PREFIX}inbox:{node}"


StreamId = tuple[int, int]


def stream_id(value: bytes | str) -> StreamId:
    """``1700000000000-3`` as a pair that compares in stream order."""
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Synced:
    """What ``SYNC`` found: ids lost to other hosts, sessions over, sessions unheard of."""

    refused: list[int]
    ended: list[tuple[int, int, int]]  # cid, session, peer
    paired: list[tuple[int, int, int, str]]  # cid, session, peer, peer's node
    unnamed: list[int]  # clients whose name another host's client holds


def synced(reply: Any) -> Synced:
    refused, ended, paired, unnamed = reply
    return Synced(
        [int(c) for c in refused],
        [(int(c), int(s), int(p)) for c, s, p in ended],
        [(int(c), int(s), int(p), _text(n)) for c, s, p, n in paired],
        [int(c) for c in unnamed],
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
