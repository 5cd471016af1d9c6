"""test_docker: docker/Dockerfile, docker/compose.yml and .dockerignore, checked without a Docker
engine (none runs where CI runs, so the image itself is never built here).

What it checks, against the real binaries of $GPLQ_BUILD and this machine's dpkg database (the
machine is Debian bookworm, the release of both image stages):
  - every shared library the three programs load belongs to a package the runtime stage installs,
    or to one debian:bookworm-slim has already, or to a dependency apt brings with them; the
    libraries they link directly come from packages named in the Dockerfile (or the base);
    libopenblas.so.0 is found in the RUNPATH the Makefile sets, from an installed package;
  - every package the runtime stage installs is the runtime half of a -dev package of
    scripts/install-deps.sh and holds a library the programs load, or is a commented extra;
  - the build stage runs scripts/install-deps.sh and `make all`; two bookworm stages, a non-root
    USER with a fixed uid, the data VOLUME made and owned before VOLUME, EXPOSE, a HEALTHCHECK
    on /v1/health;
  - gplqd accepts the image's ENTRYPOINT + CMD (same host, a free port, a temp data directory),
    prints the admin token on its first start, answers the HEALTHCHECK command itself, and makes
    a token with the command compose.yml documents while it runs;
  - compose.yml (no PyYAML: a small parser for the block-style subset it uses): the build
    context and Dockerfile exist, the port maps to the port gplqd listens on, the named volume is
    declared and mounted on the VOLUME, stop_grace_period exceeds gplqd's shutdown grace;
  - .dockerignore keeps build/, var/, out/, .git and node_modules out and keeps every source file.
"""
import json
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import BUILD, GPLQD, ROOT, Daemon, run_tests  # noqa: E402

DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
COMPOSE = os.path.join(ROOT, "docker", "compose.yml")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
DEPS_SCRIPT = os.path.join(ROOT, "scripts", "install-deps.sh")
PROGRAMS = ["gplqd", "gplq-worker", "gplq"]

# Packages the runtime stage may install that are not the runtime half of a -dev package of the
# deps script, each for a reason:
RUNTIME_EXTRAS = {
    # the built-in dataset "fashion-mnist" (io/dataset.h: DS_FMNIST_DIR); the deps script lists
    # it as it is, and test_fashion_mnist_where_the_code_looks checks it against the code
    "dataset-fashion-mnist": "listed by scripts/install-deps.sh",
    # webhooks and `gplq submit` over https: libcurl only Recommends it, and the runtime stage
    # installs with --no-install-recommends
    "ca-certificates": None,
    # the HEALTHCHECK's HTTP client (libcurl4 is in the image anyway)
    "curl": None,
    # mpirun, the launcher gplqd's mpi_launch names (stage 1 across processes, train/dist.h);
    # the programs load no library of it (libmpi is libopenmpi3's)
    "openmpi-bin": "listed by scripts/install-deps.sh",
}


# ---------------------------------------------------------------- parsing

def dockerfile_instructions(path=DOCKERFILE):
    """[(stage index, INSTRUCTION, arguments)] with continuations joined and comments dropped."""
    out, stage, cur = [], -1, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.lstrip().startswith("#"):
                continue  # a comment, also inside a continued instruction
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            if cur.strip():
                word, _, rest = cur.strip().partition(" ")
                word = word.upper()
                if word == "FROM":
                    stage += 1
                out.append((stage, word, rest.strip()))
            cur = ""
    return out


def stage_of(instrs, n):
    return [(w, a) for s, w, a in instrs if s == n]


def apt_installs(instrs, n):
    """Package names after `apt-get install` in stage n's RUN instructions."""
    pkgs = []
    for w, a in stage_of(instrs, n):
        if w != "RUN":
            continue
        for part in re.split(r"&&|;|\|\|", a):
            toks = shlex.split(part)
            if "apt-get" in toks and "install" in toks:
                pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def exec_form(arg):
    v = json.loads(arg)
    assert isinstance(v, list) and all(isinstance(x, str) for x in v), arg
    return v


def deps_script_packages():
    """The packages of the deps script's pkgs=( ... ) array (not the --bench additions)."""
    text = open(DEPS_SCRIPT).read()
    m = re.search(r"^pkgs=\((.*?)^\)", text, re.S | re.M)
    assert m, "no pkgs=( ... ) in " + DEPS_SCRIPT
    pkgs = []
    for line in m.group(1).splitlines():
        pkgs += line.split("#", 1)[0].split()
    return pkgs


def yaml_subset(path):
    """Block-style YAML as compose.yml writes it: nested mappings, lists of scalars, plain or
    quoted scalars, # comments. Returns nested dicts and lists (empty mappings as {})."""
    lines = []
    with open(path) as f:
        for raw in f:
            s = re.sub(r"(^|\s)#.*$", "", raw.rstrip("\n"))  # no '#' inside the values we use
            if s.strip():
                lines.append((len(s) - len(s.lstrip(" ")), s.strip()))

    def scalar(v):
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            return v[1:-1]
        if v.startswith("["):
            return json.loads(v)
        return v

    def block(i, indent):
        if i < len(lines) and lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                out.append(scalar(lines[i][1][2:]))
                i += 1
            return out, i
        out = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, val = lines[i][1].partition(":")
            assert sep, "not a mapping line: %r" % lines[i][1]
            i += 1
            if val.strip():
                out[key.strip()] = scalar(val)
            elif i < len(lines) and lines[i][0] > indent:
                out[key.strip()], i = block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                out[key.strip()], i = block(i, indent)  # a list at the key's own indent
            else:
                out[key.strip()] = {}
        return out, i

    doc, i = block(0, lines[0][0] if lines else 0)
    assert i == len(lines), "cannot parse %s near %r" % (path, lines[i][1])
    return doc


def duration_s(v):
    """Compose durations: 45s, 1m30s, 2m."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(v))
    assert m and v, "not a duration: %r" % v
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


# ---------------------------------------------------------------- the dpkg database

_db = None


def dpkg_db():
    """{package: {priority, deps (list of lists of alternatives)}} of installed packages, and
    {virtual: [providers]}."""
    global _db
    if _db is None:
        out = subprocess.run(["dpkg-query", "-W", "-f",
                              "${Package}\t${db:Status-Abbrev}\t${Priority}\t${Pre-Depends}\t"
                              "${Depends}\t${Provides}\n"],
                             capture_output=True, text=True, check=True).stdout
        pkgs, provides = {}, {}
        for line in out.splitlines():
            name, status, prio, pre, dep, prov = (line.split("\t") + [""] * 6)[:6]
            if not status.startswith("ii"):
                continue
            deps = []
            for clause in filter(None, (c.strip() for c in (pre + "," + dep).split(","))):
                deps.append([re.sub(r"\s*\(.*?\)|:\w+", "", a).strip() for a in clause.split("|")])
            pkgs[name] = {"priority": prio, "deps": deps}
            for p in filter(None, (re.sub(r"\s*\(.*?\)", "", x).strip() for x in prov.split(","))):
                provides.setdefault(p, []).append(name)
        _db = (pkgs, provides)
    return _db


def closure(roots):
    """roots and every installed package they depend on (Pre-Depends, Depends), recursively;
    of alternatives, those installed (a virtual name: its installed providers)."""
    pkgs, provides = dpkg_db()
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for alts in pkgs.get(p, {}).get("deps", []):
            for a in alts:
                for q in ([a] if a in pkgs else []) + provides.get(a, []):
                    if q not in seen:
                        todo.append(q)
    return seen


def slim_base():
    """What debian:bookworm-slim holds: debootstrap's minbase variant, the packages of Priority
    required (apt among them) and what they depend on, as this bookworm machine records them."""
    with open("/etc/debian_version") as f:
        v = f.read().strip()
    assert v.startswith("12."), "the base set is derived from this machine's dpkg database, " \
        "which must be Debian 12 (bookworm) like the image; this is " + v
    pkgs, _ = dpkg_db()
    return closure(p for p, i in pkgs.items() if i["priority"] == "required")


def owners(paths):
    """{path: package} for the files (tries the path, its real path, and both sides of the
    /usr merge, as dpkg records whichever the package ships)."""
    cand = {}
    for p in paths:
        c = []
        for q in (p, os.path.realpath(p)):
            c.append(q)
            c.append(q[4:] if q.startswith("/usr/") else "/usr" + q)
        cand[p] = list(dict.fromkeys(c))
    allc = sorted({q for c in cand.values() for q in c})
    out = subprocess.run(["dpkg", "-S"] + allc, capture_output=True, text=True).stdout
    owner = {}
    for line in out.splitlines():
        if line.startswith("diversion "):
            continue
        pk, sep, path = line.rpartition(": ")
        if sep:
            owner[path.strip()] = pk.split(",")[0].split(":")[0].strip()
    return {p: next((owner[q] for q in c if q in owner), None) for p, c in cand.items()}


def ldd(binary):
    """{soname: resolved path} of everything the dynamic linker loads (ldd), transitively."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = {}
    for line in out.splitlines():
        line = line.strip()
        assert "not found" not in line, "%s: %s" % (binary, line)
        m = re.match(r"(\S+) => (\S+) \(", line) or re.match(r"(/\S+) \(", line)
        if m:
            libs[os.path.basename(m.group(1))] = m.group(m.lastindex)
    return libs


def dynamic(binary):
    """(NEEDED sonames, RUNPATH directories) from the ELF dynamic section."""
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    rp = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.+?)\]", out)
    return needed, [d for r in rp for d in r.split(":")]


_libs = None


def program_libraries():
    """[(program, soname, path, package, direct)] for the three programs."""
    global _libs
    if _libs is None:
        rows = []
        for prog in PROGRAMS:
            b = os.path.join(BUILD, prog)
            assert os.access(b, os.X_OK), "%s is not built (make BUILD=%s all)" % (b, BUILD)
            needed, _ = dynamic(b)
            rows += [(prog, so, path, so in needed) for so, path in ldd(b).items()]
        own = owners({r[2] for r in rows})
        _libs = [(prog, so, path, own[path], direct) for prog, so, path, direct in rows]
    return _libs


# ---------------------------------------------------------------- (a) libraries

def test_every_library_comes_from_the_runtime_stage():
    instrs = dockerfile_instructions()
    installs = set(apt_installs(instrs, 1))
    assert installs, "the runtime stage installs no packages?"
    base = slim_base()
    assert {"libc6", "dpkg", "apt", "bash"} <= base, "base set looks wrong: %d packages" % len(base)
    brought = closure(installs)
    bad = []
    for prog, so, path, pkg, direct in program_libraries():
        if pkg is None:
            bad.append("%s: %s (%s) belongs to no Debian package" % (prog, so, path))
        elif direct and pkg not in installs and pkg not in base:
            bad.append("%s links %s directly; its package %s is neither installed by the runtime "
                       "stage nor in bookworm-slim" % (prog, so, pkg))
        elif pkg not in installs and pkg not in base and pkg not in brought:
            bad.append("%s loads %s from %s, which the runtime stage would not have"
                       % (prog, so, pkg))
    assert not bad, "\n".join(bad)


def test_openblas_from_the_runpath():
    installs = set(apt_installs(dockerfile_instructions(), 1))
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    blas_dir = re.search(r"^BLAS_DIR\s*:?=\s*(\S+)", makefile, re.M).group(1)
    libs = {(p, so): (path, pkg) for p, so, path, pkg, _ in program_libraries()}
    for prog in ("gplq-worker", "gplq"):
        needed, runpath = dynamic(os.path.join(BUILD, prog))
        assert "libopenblas.so.0" in needed and blas_dir in runpath, (prog, needed, runpath)
        path, pkg = libs[(prog, "libopenblas.so.0")]
        # found in the RUNPATH directory itself, not through an alternative of the ld.so cache
        assert os.path.dirname(path) == blas_dir, (prog, path, blas_dir)
        assert pkg in installs, "%s: %s comes from %s, not installed by the runtime stage" % (
            prog, path, pkg)
    lst = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
    assert os.path.join(blas_dir, "libopenblas.so.0") in lst.split("\n"), pkg
    # gplqd never links the math (README: a crash in it cannot take the API down)
    assert not any(p == "gplqd" and ("blas" in so or "gomp" in so) for p, so, *_ in
                   program_libraries())


# ---------------------------------------------------------------- (b) packages

def test_runtime_packages_are_the_deps_scripts():
    installs = apt_installs(dockerfile_instructions(), 1)
    assert len(installs) == len(set(installs)), installs
    script = deps_script_packages()
    dev = [p for p in script if p.endswith("-dev")]
    assert len(dev) >= 8, script
    pkgs, _ = dpkg_db()
    missing = [p for p in dev if p not in pkgs]
    assert not missing, "run scripts/install-deps.sh: %s not installed" % missing
    runtime_half = closure(dev) - set(dev)
    used = {pkg for *_, pkg, _ in program_libraries()}
    bad = []
    for p in installs:
        if p in RUNTIME_EXTRAS:
            if RUNTIME_EXTRAS[p] == "listed by scripts/install-deps.sh" and p not in script:
                bad.append("%s: an extra said to be in the deps script, which lacks it" % p)
        elif p not in runtime_half:
            bad.append("%s: not the runtime half of any -dev package of the deps script, and not "
                       "a listed extra" % p)
        elif p not in used:
            bad.append("%s: no library of it is loaded by the programs (dead weight)" % p)
    for p in RUNTIME_EXTRAS:
        if p not in installs:
            bad.append("%s: a listed extra the runtime stage does not install" % p)
    assert not bad, "\n".join(bad)


def test_fashion_mnist_where_the_code_looks():
    h = open(os.path.join(ROOT, "io", "dataset.h")).read()
    d = re.search(r'#define\s+DS_FMNIST_DIR\s+"([^"]+)"', h).group(1)
    files = [os.path.join(d, "%s-%s-idx%d-ubyte.gz" % (s, k, n))
             for s in ("train", "t10k") for k, n in (("images", 3), ("labels", 1))]
    own = owners(files)
    assert set(own.values()) == {"dataset-fashion-mnist"}, own
    assert "dataset-fashion-mnist" in apt_installs(dockerfile_instructions(), 1)


# ---------------------------------------------------------------- (c) the Dockerfile

def test_dockerfile_stages():
    instrs = dockerfile_instructions()
    froms = [a.split() for s, w, a in instrs if w == "FROM"]
    assert len(froms) == 2, froms
    assert froms[0][0] == "debian:bookworm" and froms[0][1:3] == ["AS", "build"], froms
    assert froms[1][0] == "debian:bookworm-slim", froms
    build_runs = " ".join(a for w, a in stage_of(instrs, 0) if w == "RUN")
    assert re.search(r"\bbash scripts/install-deps\.sh\b", build_runs), build_runs
    assert re.search(r"\bmake\b[^&;]*\ball\b", build_runs), build_runs
    assert "make test" not in build_runs
    rt = stage_of(instrs, 1)
    # the three programs, side by side (gplqd finds gplq-worker beside itself)
    copies = [a.split() for w, a in rt if w == "COPY" and a.startswith("--from=build")]
    progs = [c for c in copies if any(x.endswith("/gplqd") for x in c)]
    assert progs and progs[0][-1].rstrip("/") == "/usr/local/bin", copies
    assert {os.path.basename(x) for x in progs[0][1:-1]} == set(PROGRAMS), progs
    model = [c for c in copies if any(x.endswith(".safetensors") for x in c)]
    assert model and model[0][-1].startswith("/usr/share/gplq/models"), copies
    src = model[0][1].replace("/src/", "", 1)
    assert os.path.isfile(os.path.join(ROOT, src)), src


def runtime_user_and_volume():
    rt = stage_of(dockerfile_instructions(), 1)
    words = [w for w, _ in rt]
    users = [a for w, a in rt if w == "USER"]
    vols = [a for w, a in rt if w == "VOLUME"]
    assert len(users) == 1 and len(vols) == 1, (users, vols)
    vol = vols[0].strip("[]\" ")
    return rt, words, users[0], vol


def test_dockerfile_user_volume_health():
    rt, words, user, vol = runtime_user_and_volume()
    assert user not in ("root", "0") and not user.startswith("0:"), user
    runs = [a for w, a in rt if w == "RUN"]
    made = [a for a in runs if re.search(r"useradd\b.*--uid 10001\b.*\b%s\b" % user, a)]
    assert made, "no `useradd --uid 10001 ... %s` in the runtime stage" % user
    assert re.search(r"groupadd\b.*--gid 10001\b", made[0]), made
    # made and owned by the user before VOLUME: later changes to a VOLUME path are discarded
    vol_at = words.index("VOLUME")
    chowned = [i for i, (w, a) in enumerate(rt) if w == "RUN" and
               re.search(r"chown [^&;]*%s[^&;]*%s" % (user, re.escape(vol)), a)]
    assert chowned and chowned[0] < vol_at, "chown of %s must come before VOLUME" % vol
    assert words.index("USER") > max(chowned)
    entry, cmd = image_argv()
    listen = cmd_flag(entry + cmd, "--listen")
    assert cmd_flag(entry + cmd, "--data-dir") == vol, (entry + cmd, vol)
    port = listen.rsplit(":", 1)[1]
    assert listen.rsplit(":", 1)[0] == "0.0.0.0", listen
    assert [a for w, a in rt if w == "EXPOSE"] == [port]
    hc = [a for w, a in rt if w == "HEALTHCHECK"]
    assert len(hc) == 1 and "CMD" in hc[0].split(), hc
    assert "http://127.0.0.1:%s/v1/health" % port in hc[0], hc
    if "curl" in hc[0].split("CMD", 1)[1].split():
        assert "curl" in apt_installs(dockerfile_instructions(), 1)
        assert re.search(r"curl\b.*\s-\w*f", hc[0]), "curl without -f passes on a 503: " + hc[0]


def image_argv():
    rt = stage_of(dockerfile_instructions(), 1)
    entry = [exec_form(a) for w, a in rt if w == "ENTRYPOINT"]
    cmd = [exec_form(a) for w, a in rt if w == "CMD"]
    assert len(entry) <= 1 and len(cmd) == 1, (entry, cmd)
    entry = entry[0] if entry else []
    assert (entry + cmd[0])[0] == "gplqd", entry + cmd[0]
    return entry, cmd[0]


def cmd_flag(argv, name):
    for i, a in enumerate(argv):
        if a == name:
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    raise AssertionError("%s not in %s" % (name, argv))


def health_command():
    hc = [a for w, a in stage_of(dockerfile_instructions(), 1) if w == "HEALTHCHECK"][0]
    return hc.split("CMD", 1)[1].strip()


def compose_token_command():
    """The `... exec gplqd gplqd token create ...` command compose.yml's comments document,
    as gplqd's arguments."""
    for line in open(COMPOSE):
        m = re.search(r"exec gplqd (gplqd token create .*)$", line)
        if m:
            return shlex.split(m.group(1))[1:]
    raise AssertionError("compose.yml does not show how to make a token")


def test_image_command_runs():
    """gplqd with the image's arguments (same host, port 0, a temp data directory): it starts,
    prints the admin token first, passes the HEALTHCHECK's own command, makes a token with the
    command compose.yml shows while it runs, and stops on SIGTERM."""
    entry, cmd = image_argv()
    argv = (entry + cmd)[1:]
    vol = runtime_user_and_volume()[3]
    listen = cmd_flag(argv, "--listen")
    host, port = listen.rsplit(":", 1)
    d = Daemon(workers=0)
    # the image's flags with two values swapped; they come after the harness's, and win
    args = [(host + ":0" if a == listen else d.data_dir if a == vol else a) for a in argv]
    d.args = args
    with d:
        start = [l for l in d.log_lines() if l.get("event") == "start"]
        assert start and start[0]["config"]["listen"] == host + ":0", start
        assert start[0]["config"]["data_dir"] == d.data_dir, start
        assert d.token and d.token.startswith("gplq_"), "no admin token on stdout at first start"
        r = d.get("/v1/health", token=None)
        assert r.status == 200 and r.json()["status"] == "ok", r
        probe = health_command().replace("127.0.0.1:%s" % port, "127.0.0.1:%d" % d.port)
        if os.access("/usr/bin/curl", os.X_OK) or "curl" not in probe:
            p = subprocess.run(["/bin/sh", "-c", probe], capture_output=True, text=True, timeout=10)
            assert p.returncode == 0, (probe, p)
        else:
            print("  (no curl here: the HEALTHCHECK command itself was not run)")
        tc = compose_token_command()
        assert cmd_flag(tc, "--data-dir") == vol, tc
        tc = [d.data_dir if a == vol else a for a in tc]
        p = subprocess.run([GPLQD] + tc, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and p.stdout.strip().startswith("gplq_"), p
        assert d.get("/v1/jobs", token=p.stdout.strip()).status == 200
        assert d.stop() == 0
        shutdown_grace = start[0]["config"]["shutdown_grace_s"]
    # and compose waits longer than that before its SIGKILL
    svc = yaml_subset(COMPOSE)["services"]["gplqd"]
    assert duration_s(svc.get("stop_grace_period", "10s")) > shutdown_grace, \
        (svc.get("stop_grace_period"), shutdown_grace)


# ---------------------------------------------------------------- (d) compose.yml

def test_compose():
    doc = yaml_subset(COMPOSE)
    svc = doc["services"]["gplqd"]
    b = svc["build"]
    ctx = os.path.normpath(os.path.join(os.path.dirname(COMPOSE), b["context"]))
    assert ctx == ROOT, (ctx, ROOT)
    assert os.path.samefile(os.path.join(ctx, b["dockerfile"]), DOCKERFILE), b
    _, _, _, vol = runtime_user_and_volume()
    listen = cmd_flag(list(image_argv()[1]), "--listen")
    if "command" in svc:  # a command replaces CMD: it must keep the two flags
        assert cmd_flag(svc["command"], "--listen").endswith(":" + listen.rsplit(":", 1)[1])
        assert cmd_flag(svc["command"], "--data-dir") == vol
    ports = svc["ports"]
    assert len(ports) == 1 and ports[0].split(":")[-1] == listen.rsplit(":", 1)[1], ports
    assert ports[0].startswith("127.0.0.1:"), "publish on the host's loopback: " + ports[0]
    mounts = [v.split(":") for v in svc["volumes"]]
    assert mounts[0][1] == vol, mounts
    assert mounts[0][0] in doc["volumes"], ("a named volume, declared under volumes:", doc)
    assert svc["restart"] == "unless-stopped", svc
    assert "healthcheck" not in svc, "the image's HEALTHCHECK is inherited"
    text = open(COMPOSE).read()
    assert '"event":"token"' in text and "logs gplqd" in text, "document where the token is"


# ---------------------------------------------------------------- .dockerignore

def dockerignored(rel, patterns):
    """Docker's rule for a path of the context: the last matching pattern wins ('!' re-includes);
    a pattern matches the path or any of its parent directories. Enough for the patterns used
    here (*, ?, ** as whole path segments, a trailing /)."""
    def rx(pat):
        out = ""
        for i, seg in enumerate(pat.strip("/").split("/")):
            if seg == "**":
                out += "(?:[^/]+/)*"
                continue
            out += re.sub(r"\\\*", "[^/]*", re.sub(r"\\\?", "[^/]", re.escape(seg))) + "/"
        return re.compile(out[:-1] if out.endswith("/") else out + "[^/]*")
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ex = False
    for neg, pat in patterns:
        r = rx(pat)
        if any(r.fullmatch(p) for p in prefixes):
            ex = not neg
    return ex


def test_dockerignore():
    assert not os.path.exists(os.path.join(ROOT, "docker", "Dockerfile.dockerignore")), \
        "two ignore files: BuildKit would read only docker/Dockerfile.dockerignore"
    pats = []
    for line in open(DOCKERIGNORE):
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append((line.startswith("!"), line.lstrip("!")))
    for p in ("build/gplqd", "var/gplq.db", "out/x", ".git/HEAD", "node_modules/a/b.js",
              "web/node_modules/a.js", "tests/integration/__pycache__/x.pyc",
              "models/vit-fmnist.safetensors.state"):
        assert dockerignored(p, pats), p + " is sent to the builder"
    # every source file (tracked, or new and not git-ignored) reaches the builder
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "--cached", "--others",
                        "--exclude-standard"], capture_output=True, text=True)
    if r.returncode != 0:
        print("  (no git: the source files were not checked against .dockerignore)")
        return
    # node_modules and __pycache__ are installed or generated here, never sources of the image
    files = [f for f in r.stdout.splitlines()
             if f and not {"node_modules", "__pycache__"} & set(f.split("/"))]
    assert "Makefile" in files and "scripts/install-deps.sh" in files, files[:5]
    lost = [f for f in files if dockerignored(f, pats)]
    assert not lost, "excluded from the build context: %s" % lost[:20]


# ---------------------------------------------------------------- (e) an engine?

def test_engine_note():
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=5)
        ok = r.returncode == 0 and r.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        print("  Docker engine %s present: all the checks above ran; building the image is still "
              "not part of CI (docker compose -f docker/compose.yml build)" % r.stdout.strip())
    else:
        print("  no Docker engine: the checks above ran without one; the image build is not "
              "part of CI")


if __name__ == "__main__":
    run_tests(globals())
