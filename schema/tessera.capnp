# Tessera's network protocol, version 1. Cap'n Proto RPC over TCP (optionally TLS) is the only
# protocol a Tessera node speaks. This file is the contract: clients in any language are written
# against it, not against the Rust code.
#
# Evolution rules: only add fields, methods, enumerants and union members, each with the next
# ordinal; never renumber, retype or remove one. An old client keeps working against a newer
# server and the other way round (unknown fields read as their defaults).
#
# Authority: the bootstrap capability is `Gateway`. Presenting a token to `Gateway.login` yields
# a `Tenant` capability bound to the tenant and role in the token's claims. No method takes a
# tenant name a client could forge: holding the capability *is* the permission.
#
# Errors: a failed call returns a Cap'n Proto exception whose description starts with a stable
# lower-case code and a colon, then a message for humans, e.g. `overloaded: 8 queries running`,
# `sql: unknown column foo`, `unauthenticated: token expired`, `permission: role reader cannot
# import`, `not_found: no table events`. The code is the name of an `ErrorCode` enumerant below
# (written as in this file, e.g. `not_found` for notFound's wire text; see ErrorCode). Some
# client libraries wrap the description (pycapnp prefixes `remote exception: `); strip that
# before reading the code. A description whose prefix is no known code is `internal`.
#
# Tokens (Gateway.login): a JWT (RFC 7519), compact form. Claims: `sub` (who; required),
# `tenant` (required for reader/writer/admin, absent for operator), `role` (reader, writer,
# admin or operator), `iss` and `aud` (must equal the server's configured issuer and audience,
# both "tessera" by default), `exp` (required, Unix seconds), `nbf` (optional), `iat` (optional).
# The header's `alg` must be the algorithm of the server's key (HS256, EdDSA or RS256); with
# several keys the header's `kid` names one. An HS256 secret file is read as bytes with trailing
# whitespace removed (a newline from `echo` is not part of the secret); at least 32 bytes.
# Leeway: `nbf` tolerates the server's configured clock skew (30 s by default); `exp` has none:
# a token is refused at login from the second after `exp`, and so is every call on a capability
# it produced (log in again with a fresh token).

@0xec5d3759aa784382;

using Stream = import "/capnp/stream.capnp";

enum ErrorCode {
  # The stable codes that start every exception description. Wire text: the enumerant's name
  # in snake_case (notFound -> `not_found`), then `: `, then the message.
  unauthenticated @0;  # token missing, malformed, expired, forged or for another audience
  permission @1;       # the capability's role may not do this
  sql @2;              # the statement is not valid SQL of the supported subset
  notFound @3;         # no such table
  invalid @4;          # bad arguments (names, specs, import data)
  overloaded @5;       # too many queries running; retry later
  limit @6;            # a size or count limit was exceeded
  cancelled @7;        # the query was cancelled (cancel, dropped call, failed sink)
  corrupt @8;          # stored data failed a check
  io @9;               # the node's disk failed
  internal @10;        # a bug or an unexpected failure on the node
  unavailable @11;     # the node cannot serve this now
}

enum Role {
  reader @0;     # query, explain, tables, describe
  writer @1;     # reader, plus importBatches and ingest
  admin @2;      # writer, plus the tenant's Admin capability (create and drop tables)
  operator @3;   # cluster-wide: create and drop tenants, list nodes; never any tenant's rows
  node @4;       # a cluster member: registers with coordinators, and replicates and forwards
                 # tenants' writes and queries to its peers (`Gateway.peerLogin`)
}

struct QueryStats {
  # Counters of one query, as measured by the node that ran it.
  rowsReturned @0 :UInt64;     # rows sent to the sink
  rowsScanned @1 :UInt64;      # rows in pages that were read (not pruned)
  bytesRead @2 :UInt64;        # bytes read from disk (buffer-pool hits read nothing)
  filesTotal @3 :UInt64;       # files the table holds
  filesPruned @4 :UInt64;      # files skipped by manifest statistics
  rowGroupsTotal @5 :UInt64;   # row groups in files that were opened
  rowGroupsPruned @6 :UInt64;  # row groups skipped by their statistics
  pagesTotal @7 :UInt64;       # pages of the query's columns in row groups that were opened
  pagesPruned @8 :UInt64;      # of those, pages skipped by statistics or the page index
  poolHits @9 :UInt64;         # decoded pages served by the buffer pool
  poolMisses @10 :UInt64;      # pages read and decoded
  elapsedMicros @11 :UInt64;   # wall time on the server, from admission to the last batch
  batches @12 :UInt64;         # record batches sent to the sink
  ipcBytes @13 :UInt64;        # bytes of Arrow IPC sent to the sink
  queuedMicros @14 :UInt64;    # time from the call's arrival on its connection to taking a query slot
  bytesScanned @15 :UInt64;    # decoded bytes of the pages scanned, from the pool or the disk
  rowsTotal @16 :UInt64;       # rows of the files that were not pruned
  rowsFromStatistics @17 :UInt64;  # rows counted from statistics alone, without reading pages
  filesCached @18 :UInt64;     # files whose partial result came from the node's partial-result cache
  partitionsTotal @19 :UInt64; # partitions (file directories, e.g. date=2024-01-01) of the table
  partitionsPruned @20 :UInt64;  # of those, partitions whose every file statistics pruned
}

interface BatchSink {
  # Supplied by the client to receive a result. The concatenation of every `push`'s `ipc`, in
  # order, is one Arrow IPC stream (the "streaming format": a schema message, record batch
  # messages, an end-of-stream marker); each push carries whole messages, so a client may decode
  # push by push. Every result column is nullable; timestamps are microseconds since the epoch in
  # UTC, typed as Arrow timestamp[us] without a zone. The server waits for flow control between pushes, so a slow sink slows the
  # query instead of filling the server's memory.

  push @0 (ipc :Data) -> stream;
  # One or more complete Arrow IPC messages.

  done @1 (stats :QueryStats);
  # The result is complete; no push follows. Not called when the query fails: the `query` call
  # then returns the error.
}

struct Column {
  name @0 :Text;
  type @1 :Text;
  # One of int32, int64, float64, boolean, string, date (days since 1970-01-01, Arrow date32),
  # timestamp (microseconds since 1970-01-01 UTC; Arrow timestamp[us] without a zone).
  nullable @2 :Bool;
  # Defaults to false: a spec built without setting it makes a NOT NULL column, and an import
  # carrying a null in it fails.
}

enum Compression {
  snappy @0;
  zstd @1;
  none @2;
}

struct TableInfo {
  name @0 :Text;
  columns @1 :List(Column);
  timeColumn @2 :Text;             # the column partitioned by day and sorted on; empty if none
  partitionBy @3 :List(Text);      # further partition columns, after the day
  compression @4 :Compression;
  rows @5 :UInt64;
  files @6 :UInt64;
  bytes @7 :UInt64;                # bytes of Parquet on disk
  version @8 :UInt64;              # manifest version, incremented by every change
}

interface ImportStream {
  # Rows written into one table by one `importBatches` call. Nothing is visible to queries until
  # `commit` returns; dropping the capability without committing discards everything written.

  write @0 (ipc :Data) -> stream;
  # Bytes of an Arrow IPC stream whose schema matches the table's columns by position AND by
  # name (the table's names, lower case); as with BatchSink, the concatenation of all writes is
  # one IPC stream and each write holds whole messages. Arrow types per column type, stored
  # as is: int32: Int32; int64: Int64; float64: Float64; boolean: Boolean; string: Utf8;
  # date: Date32; timestamp: Timestamp(Microsecond) without a zone. Other types are converted
  # with Arrow's cast where it can (e.g. Int32 into int64, dictionary Utf8 into string); a
  # timestamp of any unit is accepted, with a zone converted to UTC, without one taken as UTC.
  # A value that cannot be converted fails the import with `invalid:`.
  # The stream must end with its end-of-stream marker (the IPC writer's `finish`) before
  # `commit`. Writes are flow-controlled by Cap'n Proto's streaming (`-> stream`): a client may
  # keep sending without awaiting each write, and the connection's flow-control window bounds
  # how many are in flight; await each write's promise before `commit`. Schema mismatches fail
  # the next call with an `invalid:` error naming the column.

  commit @1 () -> (rows :UInt64, files :UInt64, bytes :UInt64, version :UInt64);
  # Writes the rows as Parquet files and publishes them atomically; after it returns they are
  # durable and visible to every later query. In a cluster, a replicated table's import is
  # published on its leader once `writeQuorum` of its in-sync replicas hold the files durable
  # (each follower publishes them too; one that fails leaves the in-sync set and is copied the
  # table again); a partitioned table's, on every partition it has rows for.

  prepare @2 () -> ();
  # Optional, before `commit`: writes and stages everything written so far (on a replicated
  # table, on `writeQuorum` of its replicas), so `commit` only publishes. An error means nothing
  # was imported. A partitioned table's node prepares every partition's import before it commits
  # any, so an import is published on every partition or on none (short of a node failing
  # between two partitions' commits, which the error then names).
}

interface Tenant {
  # One tenant, as seen by the role of the token that produced this capability.

  query @0 (sql :Text, sink :BatchSink, tag :UInt64) -> (stats :QueryStats);
  # Runs one SELECT and streams its result into `sink`, then returns the query's counters.
  # `tag` (optional, chosen by the client) lets `cancel` name this query; tag 0 is an ordinary
  # tag (the default when unset), so queries sent without a tag are all cancelled by cancel(0). Dropping the call (or
  # the connection) cancels the query; so does a sink that fails.

  explain @1 (sql :Text, partition :Text) -> (plan :Text);
  # The plan of a SELECT and what pruning would skip, without reading data pages. For a
  # partitioned table in a cluster: which partitions the key prunes, then each partition's plan
  # on the replica that would run it. `partition`: between nodes (a peer session), the plan of
  # one partition (e.g. `events.p3`) of the table the SELECT names, on this node's replica.

  tables @2 () -> (tables :List(TableInfo));
  # The tenant's tables.

  describe @3 (table :Text) -> (table :TableInfo);

  importBatches @4 (table :Text) -> (stream :ImportStream);
  # Appends rows to an existing table (role writer or admin).

  cancel @5 (tag :UInt64) -> (cancelled :Bool);
  # Cancels this capability's running queries with that tag; false if none was running (a
  # query that already finished is no longer running).

  admin @6 () -> (admin :Admin);
  # The tenant's administration capability (role admin).

  whoami @7 () -> (tenant :Text, role :Role, expiresAt :Int64);
  # What this capability is bound to; `expiresAt` is the token's expiry in Unix seconds.

  ingest @8 (table :Text, producer :Text, leaderEpoch :UInt64) -> (stream :IngestStream);
  # Opens durable streaming ingestion into an existing table (role writer or admin) for one
  # producer: a client-chosen name (1 to 128 bytes) that, with each batch's sequence number,
  # is the batch's idempotency key. Several streams may use one producer name one after the
  # other (a reconnect, a retry after a server restart); two at once race for its keys.
  # `leaderEpoch`: set by a table's leader replicating to a follower (a replica session), the
  # table's leader epoch it leads at; a follower that knows a later epoch refuses the stream's
  # batches (`unavailable: fenced`), so a deposed leader cannot have them acknowledged.

  installReplica @9 (table :Text, leaderEpoch :UInt64) -> (installer :ReplicaInstaller);
  # Cluster only, on a session a table's leader opened with `Gateway.peerLogin` (role node, mode
  # replica): replaces this node's copy of `table` by the leader's (a follower catching up).
  # The leader sends the files its manifest lists, then commits that manifest; a follower
  # knowing a later leader epoch than `leaderEpoch` refuses the copy (`unavailable: fenced`).

  queryPartial @10 (sql :Text, partition :Text, sink :BatchSink, tag :UInt64)
      -> (stats :QueryStats);
  # Cluster only, on a peer session: runs `sql` (a SELECT of a partitioned table) on this node's
  # replica of one of its partitions (`partition`, e.g. `events.p3`) and streams its *partial*
  # result: group keys with aggregate states, or row values (hidden ORDER BY columns included),
  # which the node the client asked merges with the other partitions' (tessera-storage-engine
  # `query::partial` defines the columns). `not_found` when this node holds no in-sync replica.

  replicaSummary @11 (table :Text, leaderEpoch :UInt64) -> (summary :Text);
  # Cluster only, on a session a table's leader opened with `Gateway.peerLogin` (mode replica):
  # what this node's copy of `table` holds, for anti-entropy: JSON `{"rows": N, "columns":
  # {name: {"values": N, "min": text, "max": text}}}` (values: the non-NULL count; min and max
  # rendered as text, absent for a type without an order). The leader asks with the table's
  # writes held back, so every in-sync replica answers for the same batches; a follower knowing
  # a later leader epoch than `leaderEpoch` refuses (`unavailable: fenced`).

  stageImport @12 (table :Text, leaderEpoch :UInt64) -> (stager :ImportReplica);
  # Cluster only, on a session a table's leader opened with `Gateway.peerLogin` (mode replica):
  # receives an import's files the leader wrote, to publish beside this node's files of `table`
  # once the leader has them staged on enough replicas. Dropping `stager` before `publish`
  # discards them. Fenced by `leaderEpoch` as `installReplica`.
}

interface ImportReplica {
  # One import's files on a follower: staged (never visible to queries) until `publish`.

  put @0 (name :Text, offset :UInt64, data :Data) -> stream;
  # Bytes of the staged file `name` (a plain file name ending in `.parquet`) at `offset`;
  # pieces may arrive in any order.

  prepare @1 (files :Data) -> (rows :UInt64);
  # JSON list of the files sent, `[{"directory": "date=2024-01-01", "entry": {...}}]` (entry: a
  # manifest file entry, `path` its name): each must have the size and CRC-32 its entry gives it
  # (else `corrupt:`). They are then durable here, not yet visible.

  publish @2 () -> (rows :UInt64, files :UInt32, version :UInt64);
  # Moves the prepared files into the table under this node's next file ids and publishes its
  # manifest listing them. Refused (`unavailable: fenced`) once this node knows a later leader
  # epoch than the stager's.
}

interface ReplicaInstaller {
  # One copy of a table being installed on a replica: files are staged (never visible to
  # queries), then `commit` swaps them in with one manifest publication.

  put @0 (path :Text, offset :UInt64, data :Data) -> stream;
  # Bytes of the file at `path` (relative to the table directory, as the manifest lists it),
  # written at `offset`; pieces may arrive in any order.

  commit @1 (manifest :Data) -> (files :UInt32, rows :UInt64);
  # The leader's manifest (JSON) listing the files sent: each staged file must have the size
  # and CRC-32 the manifest gives it (else `corrupt:`, nothing changes). The table then holds
  # exactly these files and the producers' windows of the manifest, under a new incarnation:
  # rows this node held before are gone, batches it receives later that the files already
  # hold are acknowledged as duplicates.
}

struct IngestAck {
  # The answer to `IngestStream.append`: the batch is durable on this node.
  rows @0 :UInt64;         # rows of the batch
  durable @1 :Bool;        # true: written to the node's write-ahead log and fsynced
  duplicate @2 :Bool;      # true: this key was already durable; the batch was not applied again
  sequence @3 :UInt64;     # the batch's sequence number, as sent
}

interface IngestStream {
  # One producer's batches into one table. Each batch is made durable (write-ahead log, fsync)
  # before it is acknowledged, and an acknowledged row is visible to the next query on this
  # node. Rows reach Parquet files later (flush); queries see them all the while.

  write @0 (ipc :Data) -> stream;
  # Bytes of the next batch: an Arrow IPC stream (schema, record batches, end-of-stream marker),
  # sent in pieces of whole messages, as `ImportStream.write`. Columns match the table's by
  # name (lower case), in any order; a column the table lacks is added to the table, nullable,
  # before the batch is logged (older rows read NULL in it; a type the engine cannot hold is an
  # `invalid:` error naming the column), and a nullable table column the batch lacks reads as
  # NULL. Types are converted as for imports.

  append @1 (sequence :UInt64) -> (ack :IngestAck);
  # Ends the batch written since the previous `append` and makes it durable under the key
  # (producer, sequence). Resolves once the batch is in the log and fsynced (`durable`), or
  # at once when the key is already durable (`duplicate`: acknowledged again, applied once).
  # Sequence numbers are the producer's to choose; a producer should count up from 0 or 1. A
  # key more than 100,000 below the producer's highest is refused (`invalid:`): the node no
  # longer remembers it. A table remembers its 10,000 most recently active producers. A failed batch applies nothing: it may be sent again with its key.
  # A batch over the node's batch size limit fails with `limit:`; while the node's ingest
  # buffers are full, `append` waits (backpressure) instead of failing.

  flush @2 () -> (files :UInt64);
  # Writes this node's buffered rows of the table to Parquet and publishes them now (they are
  # already durable; this only moves them out of the log). Returns the files written.
}

struct TableSpec {
  # What a new table looks like.
  name @0 :Text;
  columns @1 :List(Column);
  timeColumn @2 :Text;             # empty: the first timestamp column, if any
  partitionBy @3 :List(Text);
  compression @4 :Compression = snappy;
  replicationFactor @5 :UInt8;     # in a cluster: nodes holding the table (0: the default, 3)
  writeQuorum @6 :UInt8;           # in a cluster: replicas that must have a batch durable
                                   # before it is acknowledged (0: a majority)
  clusterPartitions @7 :UInt32;    # in a cluster: hash partitions, each on its own replica set
                                   # (0 or 1: the table is placed whole)
  clusterPartitionKey @8 :Text;    # the column whose hash picks a row's partition (an integer
                                   # or string column; needed with more than one partition)
}

interface Admin {
  # A tenant's administration (role admin), scoped to the tenant of its token.
  createTable @0 (spec :TableSpec) -> (table :TableInfo);
  dropTable @1 (name :Text) -> (existed :Bool);
  listTables @2 () -> (tables :List(TableInfo));
  # The tables this node holds a copy of (in a cluster, partitions by their own names,
  # `events.p3`); `Tenant.tables` lists the tenant's tables as clients see them.

  dropPartitionsBefore @3 (table :Text, before :Text)
      -> (dates :List(Text), files :UInt64, rows :UInt64);
  # Retention: drops every date partition of the table older than `before` (YYYY-MM-DD) in one
  # atomic publication, after flushing the table's buffered rows (rows acknowledged before the
  # call go with their partitions). Returns the dates dropped, oldest first. The files are
  # deleted once no query that could still read them runs. A table without date partitions
  # is `invalid:`. In a cluster, through the table's leader (each partition's), on every
  # in-sync replica; the counts are the leaders' copies'.

  compact @4 (table :Text) -> (filesRemoved :UInt64, filesWritten :UInt64);
  # Merges the table's small files now, as background compaction does (without its budget):
  # every partition with more files than the node's target. Answers never change. In a
  # cluster, on every up, in-sync replica of the table (of each of its partitions).
}

struct NodeInfo {
  address @0 :Text;
  cores @1 :UInt32;
  version @2 :Text;                # the node's software version
  uptimeSeconds @3 :UInt64;
  queriesRunning @4 :UInt32;
  connections @5 :UInt32;
  queriesQueued @6 :UInt32;        # queries waiting for a slot
  memoryMaxBytes @7 :UInt64;       # all the node may use (max_memory_gb)
  residentBytes @8 :UInt64;        # resident memory of the process now
  memory @9 :List(MemoryArea);     # each budget of the [memory] section, with its use
  poolHits @10 :UInt64;            # decoded pages served from the buffer pools since start
  poolMisses @11 :UInt64;          # pages read and decoded
  diskUsedBytes @12 :UInt64;       # the file system holding the data directory
  diskCapacityBytes @13 :UInt64;
  tables @14 :List(TableSize);     # every table the node holds (operators only see sizes)
  draining @15 :Bool;              # stopping: accepts no new queries
  dataDir @16 :Text;
  ingestLagSeconds @17 :Float64;   # age of the oldest acknowledged row not yet in a file (0: none)
}

struct MemoryArea {
  # One budget of a node's memory: query_processing, parquet_cache, metadata_cache,
  # partial_cache or ingest_buffers.
  name @0 :Text;
  budgetBytes @1 :UInt64;
  usedBytes @2 :UInt64;
}

struct TableSize {
  tenant @0 :Text;
  table @1 :Text;
  files @2 :UInt64;
  partitions @3 :UInt64;
  rows @4 :UInt64;                 # rows in files (buffered rows not counted)
  bytes @5 :UInt64;                # bytes of its files
}

struct TenantQuota {
  # One tenant's limits on a node, set by an operator and stored with the tenant's tables.
  # 0 in a field: no limit of that kind (the node's own limits still apply).
  concurrentQueries @0 :UInt32;      # queries running at once, short and long together
  resultBytes @1 :UInt64;            # Arrow IPC bytes one query may return (then `limit`)
  storageBytes @2 :UInt64;           # table file bytes; imports and ingestion refused beyond
  ingestBytesPerSecond @3 :UInt64;   # ingested Arrow IPC bytes per second (held back beyond)
  cpuShares @4 :UInt32;              # CPU shares of its scans on every core (1..1000; 0: default)
  ioShares @5 :UInt32;               # shares of every core's queued direct reads (1..1000)
  poolFloorBytes @6 :UInt64;         # decoded-page bytes other tenants' scans cannot evict
}

interface Operator {
  # Cluster-wide operations (role operator). Never exposes any tenant's table rows; `nodes`
  # names tables with their sizes, for capacity planning; `queryStats` shows every tenant's
  # recent queries.
  createTenant @0 (name :Text) -> (created :Bool);
  dropTenant @1 (name :Text) -> (existed :Bool);
  # Deletes the tenant's data on this node. In a cluster, `invalid:` while any of its tables
  # is placed (drop those first: `Admin.dropTable` drops every replica).
  listTenants @2 () -> (tenants :List(Text));
  nodes @3 () -> (nodes :List(NodeInfo));
  setQuota @4 (tenant :Text, quota :TenantQuota) -> ();
  # Replaces the tenant's quota object (creating the tenant), durably; it applies to queries,
  # imports and ingestion that start from then on.
  getQuota @5 (tenant :Text) -> (quota :TenantQuota, storageBytesUsed :UInt64);
  # The tenant's quota object and the bytes its table files hold now.
  queryStats @6 (sql :Text, sink :BatchSink, local :Bool) -> (stats :QueryStats);
  # A SELECT over `query_stats` with every tenant's recent queries (their SQL text, counters and
  # outcome; the `tenant` column says whose), streamed into `sink`. In a cluster, every up
  # node's records (an up node that does not answer fails it, naming it). `local`: this node's
  # records only: what a node asks its peers, with its node token (the one call a node token
  # may make here).
}

interface Gateway {
  # The bootstrap capability of every connection.

  login @0 (token :Text) -> (tenant :Tenant, role :Role);
  # Verifies a JWT (signature, algorithm, expiry, not-before, issuer, audience, key id) and
  # returns the capability for the tenant and role in its claims. Operator tokens are refused
  # here; use `operatorLogin`.

  operatorLogin @1 (token :Text) -> (operator :Operator);
  # As `login`, for a token whose role is operator.

  version @2 () -> (protocol :UInt32, server :Text);
  # Protocol version (1 for this file) and the server's software version. Needs no token.

  peerLogin @3 (token :Text, tenant :Text, mode :PeerMode) -> (tenant :Tenant);
  # For cluster members (role node): the tenant's capability (role admin) for a peer node.
}

enum PeerMode {
  replica @0;    # the caller leads: writes apply on this node only, queries read its data
  forwarded @1;  # the caller forwards a client's writes: this node must lead the table (it
                 # replicates them); a node that does not lead refuses (`unavailable`) rather
                 # than forward again
}

# ---------------------------------------------------------------------------------------------
# The cluster coordinator (`tessera coordinator`): catalog and membership, never in the data path.
# ---------------------------------------------------------------------------------------------

struct Label {
  key @0 :Text;
  value @1 :Text;
}

struct ClusterNode {
  # A tenant node as the catalog knows it.
  nodeId @0 :Text;
  address @1 :Text;                # its RPC address, as clients and peers reach it
  httpAddress @2 :Text;            # /metrics and /health ("" when it serves none)
  cores @3 :UInt32;
  labels @4 :List(Label);          # failure domains: host, rack, ...
  version @5 :Text;
  up @6 :Bool;                     # false once it missed heartbeats for the node timeout
  incarnation @7 :UInt64;          # grows at each registration (a restart)
  lastSeenMillis @8 :Int64;        # catalog time of its last heartbeat, ms since the Unix epoch
  registeredMillis @9 :Int64;
  diskUsedBytes @10 :UInt64;
  diskCapacityBytes @11 :UInt64;
  queriesRunning @12 :UInt32;
  copying @13 :Text;               # what it copies to other nodes now: JSON, a list of
                                   # {tenant, table, to, bytes, total} ("" when nothing)
  tableBytes @14 :Text;            # the sizes of the tables it leads: JSON, a list of
                                   # {tenant, table, bytes} ("" when none)
}

interface Coordinator {
  # Operator-token capability of a coordinator (nodes use one to register).
  registerNode @0 (node :ClusterNode) -> (incarnation :UInt64, heartbeatMillis :UInt32);
  # Inserts or replaces the node's registration (up, a new incarnation); the node then sends a
  # heartbeat every `heartbeatMillis`.
  heartbeat @1 (nodeId :Text, diskUsedBytes :UInt64, diskCapacityBytes :UInt64,
                queriesRunning :UInt32, copying :Text, tableBytes :Text)
      -> (routingVersion :UInt64);
  # `tableBytes`: the bytes of the files of each table the node leads (JSON, a list of
  # {tenant, table, bytes}), which rebalancing weighs replicas by.
  # `not_found` when the catalog does not know the node: register again. `routingVersion` is
  # the routing table's version: a node whose copy is older asks for `routing`.
  status @2 () -> (nodes :List(ClusterNode), leader :Text, leaderEpoch :UInt64,
                   leaderExpiresMillis :Int64, catalog :Text, coordinator :Text, nowMillis :Int64);
  # Every node; the coordinator holding the leader lease, its fencing epoch and expiry; which
  # catalog; which coordinator answered; the catalog's clock.

  placeTable @3 (tenant :Text, table :Text, replicationFactor :UInt8, writeQuorum :UInt8,
                 partitionOf :Text, partition :UInt32, partitions :UInt32, partitionKey :Text,
                 partitionKeyType :Text)
      -> (placement :TablePlacement);
  # Places a new table on `replicationFactor` nodes that are up (distinct failure domains where
  # the labels allow, fewest bytes used first; the first is its leader), or returns the
  # placement it already has. Only the leading coordinator places (`unavailable` elsewhere).
  # A partition of a partitioned table is placed as a table named `<partitionOf>.p<partition>`
  # (the node places each in turn); nodes holding fewest replicas, then fewest leaderships, are
  # chosen first, so partitions spread over the cluster.

  routing @4 () -> (version :UInt64, tables :List(TablePlacement), quotas :Text);
  # Every table's placement, and the version of this routing table (it grows at every change).
  # `quotas`: every tenant's quota object that was set through `setQuota`, JSON
  # `{tenant: {"storage_bytes": N, ...}}`, which each node applies.

  setInSync @5 (tenant :Text, table :Text, nodeId :Text, inSync :Bool, epoch :UInt64)
      -> (placement :TablePlacement);
  # For a table's leader at `epoch`: takes a replica out of the in-sync set before a batch is
  # acknowledged without it, or puts it back. `unavailable` once the leadership moved on.

  dropTable @6 (tenant :Text, table :Text) -> (dropped :Bool);
  # Removes a table's placement (a node calls it once every replica dropped its copy); false
  # when the table had none. Only the leading coordinator changes it (`unavailable` elsewhere).

  reportFiles @7 (nodeId :Text, tenant :Text, table :Text, epoch :UInt64,
                  manifestVersion :UInt64, files :List(CatalogFile), schema :Text,
                  settings :Text) -> ();
  # For a table's leader at `epoch`, whenever its manifest changes: the files it lists, and
  # the table's schema (columns, time partitioning, sort column) and writer settings (JSON),
  # which replace those the catalog holds for the table (`unavailable: fenced` from a node
  # that does not lead it at that epoch; a report older than the stored one changes nothing).

  setQuota @9 (tenant :Text, quota :Text) -> ();
  # Replaces a tenant's quota object (JSON, as `Operator.setQuota` gives it) in the catalog and
  # bumps the routing version: every node applies it when it next fetches the routing table.
  # Any coordinator writes it (the catalog orders the writes).

  tableFiles @8 (tenant :Text, table :Text) -> (tables :List(TableFiles));
  # The files of one table as its leader last reported them (with `files`); with an empty
  # `table`, every table's counts (without).
}

struct CatalogFile {
  path @0 :Text;                   # relative to the table's directory on its leader
  bytes @1 :UInt64;
  rows @2 :UInt64;
  crc32 @3 :Int64;                 # CRC-32 of the whole file; -1 when unknown
  entry @4 :Text;                  # the manifest's entry (JSON): per-column min, max, NULL count
}

struct TableFiles {
  tenant @0 :Text;
  table @1 :Text;
  node @2 :Text;                   # the leader that reported them ("" before any report)
  epoch @3 :UInt64;                # at this leader epoch
  manifestVersion @4 :UInt64;      # from this version of its manifest
  fileCount @5 :UInt64;
  rows @6 :UInt64;
  bytes @7 :UInt64;
  files @8 :List(CatalogFile);
  schema @9 :Text;                 # JSON: columns, time partitioning, sort column
  settings @10 :Text;              # JSON: writer settings
}

struct Replica {
  nodeId @0 :Text;
  address @1 :Text;                # its RPC address
  up @2 :Bool;
}

struct TablePlacement {
  # Where a table lives: its replicas, the leader first.
  tenant @0 :Text;
  table @1 :Text;
  replicationFactor @2 :UInt8;
  writeQuorum @3 :UInt8;
  leader @4 :Text;                 # node id of the replica that takes writes
  epoch @5 :UInt64;                # grows whenever the leader changes
  replicas @6 :List(Replica);
  inSync @7 :List(Text);           # node ids of the replicas holding every acknowledged batch
  partitionOf @8 :Text;            # this is one hash partition of table `partitionOf` ("" when
                                   # the table is placed whole); its name is `<partitionOf>.p<i>`
  partition @9 :UInt32;            # its index i, from 0
  partitions @10 :UInt32;          # the table's partitions
  partitionKey @11 :Text;          # the column whose hash picks a row's partition
  partitionKeyType @12 :Text;      # that column's type: "int" or "string"
}

interface CoordinatorGateway {
  # The bootstrap capability of a coordinator connection.
  login @0 (token :Text) -> (coordinator :Coordinator);
  # Operator tokens only.
  version @1 () -> (protocol :UInt32, server :Text);
}
