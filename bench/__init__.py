"""Benchmarks of skillsvc against baselines measured in the same run (issue 7).

``python -m bench`` (``make bench``; ``--quick`` for a smoke-sized run) starts the real
service as a child process, ``python -m skillsvc.cli serve`` configured only through
``SKILLSVC_*`` variables, on the embedded PostgreSQL in a fresh temporary data dir
(archive and file limits raised to 110 MiB for scenario 6, metrics off, one worker
process: ``SKILLSVC_WORKERS=1``, so scenarios 1-7 measure one process). The client is
one grpc.aio process using the generated stubs; the same client runs each scenario
and its baseline, interleaved A B A B …, after a warm-up. The database is vacuumed and
checkpointed before each measured block, and nothing is deleted until the end
(BENCHMARKING.md). Results go to ``bench/results/<date>.json`` and ``<date>.md``
(``<date>-quick.*`` in quick mode), with the machine line.

Scenarios (targets from issue 7):

1. **Small install**: a 5-file, ~10 KiB skill uploaded in one chunk, Install call
   start → DONE seen on InstallProgress, sequentially (6 runs x 50). Baseline: the
   same bytes spooled to a file while hashed with SHA-256, extracted with ``tarfile``,
   every file and directory fsynced, the tree renamed into place, in this process.
   Target: p50 ≤ 15 ms and ≤ 4x baseline.
2. **Large install**: one 50 MiB incompressible file plus SKILL.md (a 50 MiB
   ``.tar.gz``), sent in 1 MiB chunks, start → DONE. Baselines: the in-process path of
   scenario 1 fed the same 1 MiB chunks; and ``tar xzf`` + ``sync`` of the same archive
   already on disk. Target: ≤ 1.3x the first, ≤ 1.5x the second.
3. **Concurrent installs**: 50 clients, each installing its own skill's versions
   back to back, 1,000 small installs in all per round (2 rounds). No baseline.
   Targets: 100 % succeed, ≥ 150 installs/s, p99 start → DONE ≤ 1 s. Server,
   PostgreSQL and client CPU are reported next to the throughput.
4. **Read path**: GetPackage and GetSkillDefinition with 64 calls in flight (closed
   loop), 4 runs x 5 s each. Baseline: a bare grpc.aio server in its own process
   (``bench._echo``) answering the same requests with the same serialised response
   bytes, called from the same client with the same (de)serialisers. Targets: QPS ≥
   75 % of echo's, p99 ≤ 2x echo's.
5. **Progress latency**: sequential small installs on server A, watched on A and on
   a second ``skillsvc serve`` (B) sharing A's embedded PostgreSQL and store. Latency =
   arrival at the watcher (``time.time()``) - ``InstallEvent.time`` (PostgreSQL's
   ``clock_timestamp()`` of the UPDATE that sends the NOTIFY), same machine clock; the
   first event of each stream is a snapshot and not counted. Target: p99 ≤ 20 ms.
6. **Memory**: the server's peak RSS (VmHWM, reset via ``/proc/<pid>/clear_refs``)
   during scenario 3 (target ≤ 400 MiB) and the growth over the RSS just before while
   installing a 100 MiB package (target ≤ +64 MiB). Baseline: RSS at idle.
7. **Health under load**: health ``Check`` every 20 ms on its own channel while
   scenario 3 runs, vs the same probe at idle just before. Target: p99 ≤ 50 ms.

8. **Workers**: scenario 3's load (50 clients, small installs back to back) on two
   more servers started for it on the same PostgreSQL, one with ``SKILLSVC_WORKERS=1``
   and one with ``=2``, each with a fresh store; a warm-up round each, then 2 rounds
   of 500 installs per server, interleaved 1 2 1 2. Every client has its own channel
   (``grpc.use_local_subchannel_pool``, so a TCP connection each) so SO_REUSEPORT can
   spread the clients over the workers; the same client drives both servers. Server
   CPU is the supervisor's and the workers' together. Target: 2 workers ≥ 1.4x the
   1-worker throughput (the client shares the two cores).

9. **Replica propagation**: two more servers ("hosts") on a database of their own on
   the same PostgreSQL, each with its own store, sharing an S3 bucket (SeaweedFS, as
   in the tests; skipped without the test extras). Sequential small installs on
   replica A; latency = the client's receipt of DONE from A until replica B's
   ``packages/<skill>/current`` names the new version (B hears the catalog NOTIFY,
   fetches the archive from the bucket, checks, extracts, verifies and swaps the
   link; the link is polled every millisecond). Baseline, interleaved per block: the
   in-process spool + SHA-256 + ``tarfile`` + fsync + rename of scenario 1 on the same
   archive (what B must do at least, without the network). No target.

Quick mode runs every scenario smaller (200 concurrent installs, 2 s read blocks …),
so its scenario-3 figures are not the issue's 1,000-install measurement.

``--profile DIR`` records the server with ``py-spy`` (raw collapsed stacks, one file
per scenario) during the measured blocks; profiled numbers are not the table's.
"""
