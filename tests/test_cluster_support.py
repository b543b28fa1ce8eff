"""Tests of the multi-host test support: experiments/testbed/ (netns_hosts.py, slurm_cluster.py).

Skipped (with the reason) where network namespaces or SLURM/munge are not
available; scripts/install_cluster_tools.sh installs the latter.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from experiments.testbed import netns_hosts, slurm_cluster

# With the programs (setup.cfg): one SLURM cluster and one set of namespace hosts at a time.
pytestmark = pytest.mark.xdist_group("programs")

HostNamespaces = netns_hosts.HostNamespaces
SlurmCluster = slurm_cluster.SlurmCluster

IP = shutil.which("ip") or "/usr/sbin/ip"


def _skip_unless(reason):
    if reason:
        pytest.skip(reason)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _netns_list():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _links():
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _wait_for_file(path, timeout_s, what=""):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s %s" % (path, what))
        time.sleep(0.05)


SERVER = textwrap.dedent("""
    import socket, sys
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], 0))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, peer = srv.accept()
        conn.sendall(("hello %s\\n" % peer[0]).encode())
        conn.close()
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:
        print(c.makefile().readline().strip())
""")


def test_netns_hosts_tcp_between_hosts():
    _skip_unless(netns_hosts.unavailable_reason())
    hosts = HostNamespaces(["h1", "h2"])
    with hosts:
        ip1, ip2 = hosts.hosts["h1"], hosts.hosts["h2"]
        assert ip1 != ip2 and hosts.bridge_ip.endswith(".1")
        assert ip1.rsplit(".", 1)[0] == hosts.bridge_ip.rsplit(".", 1)[0]
        ns1 = hosts.netns_path("h1")
        assert ns1.startswith("/run/netns/") and os.path.basename(ns1) in _netns_list()

        # Inside a host: its own address, loopback up, and no route off the subnet.
        addrs = subprocess.run(hosts.prefix("h1") + [IP, "-o", "-4", "addr"],
                               capture_output=True, text=True, check=True).stdout
        assert ip1 + "/24" in addrs and "127.0.0.1/8" in addrs
        routes = subprocess.run(hosts.prefix("h2") + [IP, "-4", "route"],
                                capture_output=True, text=True, check=True).stdout
        assert "default" not in routes and len(routes.strip().splitlines()) == 1

        server = hosts.popen("h1", [sys.executable, "-c", SERVER, ip1],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        port = int(server.stdout.readline())
        client = hosts.popen("h2", [sys.executable, "-c", CLIENT, ip1, str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = client.communicate(timeout=20)
        assert client.returncode == 0, err
        assert out.strip() == "hello %s" % ip2  # connection came from h2's address
        assert server.poll() is None
    # close() ran: server gone, namespaces, veths and bridge gone; close is idempotent.
    assert server.poll() is not None and not _alive(server.pid)
    assert os.path.basename(ns1) not in _netns_list()
    assert hosts._bridge not in _links()
    hosts.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _skip_unless(slurm_cluster.unavailable_reason())
    hosts = HostNamespaces(["h1", "h2", "h3"])
    try:
        c = SlurmCluster(tmp_path_factory.mktemp("slurm"), hosts)
        try:
            c.wait_ready(60)
            yield c
        finally:
            c.close()
    finally:
        hosts.close()


def _sbatch(cluster, script_path, cwd):
    proc = cluster.run(["sbatch", "--parsable", str(script_path)], cwd=str(cwd))
    return proc.stdout.strip().split(";")[0]


def test_slurm_heterogeneous_job(cluster, tmp_path):
    out = tmp_path
    step = out / "step.sh"
    step.write_text(textwrap.dedent("""\
        #!/bin/bash
        ip=$(%s -o -4 addr show scope global | awk '{print $4}' | cut -d/ -f1 | tr '\\n' ' ')
        echo "$SLURMD_NODENAME $SLURM_PROCID $ip" > "$1"
        """ % IP))
    step.chmod(0o755)
    overlap_bg = out / "bg.sh"
    overlap_bg.write_text(textwrap.dedent("""\
        #!/bin/bash
        # Runs as a background step; succeeds only if the foreground step on the
        # same node runs while this one is still running.
        echo "$SLURMD_NODENAME" > "$D/bg_started"
        for i in $(seq 300); do
            if [ -e "$D/fg_done" ]; then echo yes > "$D/bg_saw_fg"; exit 0; fi
            sleep 0.1
        done
        echo no > "$D/bg_saw_fg"
        """))
    overlap_fg = out / "fg.sh"
    overlap_fg.write_text(textwrap.dedent("""\
        #!/bin/bash
        for i in $(seq 300); do [ -e "$D/bg_started" ] && break; sleep 0.1; done
        echo "$SLURMD_NODENAME" > "$D/fg_done"
        """))
    script = out / "het.sbatch"
    script.write_text(textwrap.dedent("""\
        #!/bin/bash
        #SBATCH --job-name=het
        #SBATCH --output={out}/batch.out
        #SBATCH --nodes=1 --ntasks=1
        #SBATCH hetjob
        #SBATCH --nodes=1 --ntasks=1
        #SBATCH hetjob
        #SBATCH --nodes=1 --ntasks=1
        set -eu
        export D={out}
        for g in 0 1 2; do
            v=SLURM_JOB_NODELIST_HET_GROUP_$g
            echo "$g ${{!v}}" >> "$D/nodelists"
        done
        for g in 0 1 2; do
            srun --het-group=$g --overlap {step} "$D/comp_$g"
        done
        srun --het-group=0 --overlap bash {bg} &
        bg=$!
        srun --het-group=0 --overlap bash {fg}
        wait $bg
        """).format(out=out, step=step, bg=overlap_bg, fg=overlap_fg))
    job = _sbatch(cluster, script, out)
    state = cluster.wait_job(job, ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"], 60)
    batch_out = (out / "batch.out").read_text() if (out / "batch.out").exists() else ""
    assert state == "COMPLETED", "%s\n%s\n%s" % (batch_out, cluster.job_info(job), cluster.log_tails())

    # SLURM_JOB_NODELIST_HET_GROUP_<g> were set in the batch script.
    nodelists = dict(l.split(" ", 1) for l in (out / "nodelists").read_text().splitlines())
    assert sorted(nodelists) == ["0", "1", "2"]
    assert all(v.strip() in cluster.hosts.hosts for v in nodelists.values()), nodelists

    seen = {}
    for g in range(3):
        node, procid, ip = (out / ("comp_%d" % g)).read_text().split()
        assert procid == "0"
        assert node == nodelists[str(g)].strip()
        assert ip == cluster.hosts.hosts[node], "step of %s saw IP %s" % (node, ip)
        seen[g] = node
    assert len(set(seen.values())) == 3, seen  # every component on its own host

    # Two --overlap steps ran at the same time on het group 0's node.
    assert (out / "bg_saw_fg").read_text().strip() == "yes", batch_out
    assert (out / "bg_started").read_text().strip() == seen[0]
    assert (out / "fg_done").read_text().strip() == seen[0]


def test_slurm_scancel_sends_sigterm(cluster, tmp_path):
    step = tmp_path / "step.py"
    step.write_text(textwrap.dedent("""\
        import os, pathlib, signal, sys, time
        d = pathlib.Path(sys.argv[1])
        def on_term(signum, frame):
            (d / "got_sigterm").write_text(os.environ.get("SLURMD_NODENAME", "?"))
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        (d / "ready").write_text(str(os.getpid()))
        time.sleep(300)
        """))
    script = tmp_path / "sleep.sbatch"
    script.write_text(textwrap.dedent("""\
        #!/bin/bash
        #SBATCH --job-name=sleeper
        #SBATCH --output={d}/batch.out
        #SBATCH --nodes=1 --ntasks=1
        srun --overlap {py} {step} {d}
        """).format(d=tmp_path, py=sys.executable, step=step))
    job = _sbatch(cluster, script, tmp_path)
    cluster.wait_job(job, ["RUNNING"], 30)
    _wait_for_file(tmp_path / "ready", 30, cluster.job_info(job))
    step_pid = int((tmp_path / "ready").read_text())
    assert _alive(step_pid)
    cluster.run(["scancel", job])
    assert cluster.wait_job(job, ["CANCELLED"], 30) == "CANCELLED"
    _wait_for_file(tmp_path / "got_sigterm", 15)
    assert (tmp_path / "got_sigterm").read_text() in cluster.hosts.hosts
    deadline = time.monotonic() + 15
    while _alive(step_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(step_pid)


def test_slurm_close_leaves_nothing(cluster):
    hosts = cluster.hosts
    daemon_pids = [p.pid for p in cluster._procs.values()]
    ns_pids = [pid for n in hosts.hosts for pid in hosts.namespace_pids(n)]
    assert daemon_pids and ns_pids
    assert all(p.poll() is None for p in cluster._procs.values())
    ns_names = [os.path.basename(hosts.netns_path(n)) for n in hosts.hosts]
    cluster.close()
    cluster.close()  # idempotent
    hosts.close()
    assert [p for p in daemon_pids + ns_pids if _alive(p)] == []
    listed = _netns_list()
    assert not any(n in listed for n in ns_names)
    assert hosts._bridge not in _links()
    # Nothing mentions the cluster's config any more.
    conf = str(cluster.conf_path)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open("/proc/%s/cmdline" % entry, "rb").read().decode(errors="replace")
            except OSError:
                continue
            assert conf not in cmdline or not _alive(int(entry)), cmdline
