#!/usr/bin/env python3
"""Replay the file I/O of KV-cache engines (DESIGN §1) against a mounted wombatfs.

Each engine's calls are made the way that engine makes them (flags, call order, libraries);
every pattern verifies the bytes it reads back. Prints "ok <engine>" per pattern and exits
non-zero on the first failure. Usage: patterns.py MOUNTPOINT
"""
import glob
import hashlib
import mmap
import os
import pickle
import sys
import tempfile
import threading
import time
import uuid

import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

MNT = sys.argv[1]


def blob(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=n, dtype=np.uint8).tobytes()


def vllm_fs():
    """vLLM / llm-d fs backend: O_CREAT|O_EXCL|O_TRUNC, O_DIRECT probe, one big write,
    tmp -> final rename, readv of the whole file, access() bursts, atime, statvfs, unlink, rmdir."""
    root = os.path.join(MNT, "vllm", "Llama-3-8B_ab12", "tp0")
    os.makedirs(root, exist_ok=True)
    st = os.statvfs(root)
    assert st.f_bsize == 4096, st
    hashes = []
    for i in range(8):
        data = blob(2 * 1024 * 1024, i)
        h = hashlib.sha256(data).hexdigest()[:32]
        tmp = os.path.join(root, f"{h}.bin.tmp")
        final = os.path.join(root, f"{h}.bin")
        flags = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_WRONLY
        try:
            fd = os.open(tmp, flags | os.O_DIRECT, 0o644)
            buf = mmap.mmap(-1, len(data))  # page-aligned buffer, as O_DIRECT writers use
            buf.write(data)
            n = os.write(fd, buf)
        except OSError:
            fd = os.open(tmp, flags, 0o644)
            n = os.write(fd, data)
        assert n == len(data)
        os.close(fd)
        os.rename(tmp, final)
        hashes.append((final, data))
    for final, data in hashes:
        assert os.access(final, os.F_OK)
        assert not os.access(final + ".missing", os.F_OK)
        size = os.stat(final).st_size
        bufs = [bytearray(size // 2), bytearray(size - size // 2)]
        fd = os.open(final, os.O_RDONLY)
        assert os.readv(fd, bufs) == size
        os.close(fd)
        assert bytes(bufs[0]) + bytes(bufs[1]) == data
        assert os.stat(final).st_atime >= os.stat(final).st_mtime - 1
    # the external evictor: oldest atime first, unlink, then the empty directory
    for final, _ in sorted(hashes, key=lambda h: os.stat(h[0]).st_atime):
        os.unlink(final)
    os.rmdir(root)
    print("ok vllm-fs")


def vllm_shared():
    """vLLM shared-storage connector: makedirs, several ranks rewriting the same name with
    create+truncate, safetensors save/load (mmap), stat of a directory."""
    d = os.path.join(MNT, "shared", hashlib.md5(b"prompt").hexdigest())
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "layer.0.safetensors")
    results = []

    def rank(r):
        t = {"kv": np.full((64, 128), r, dtype=np.float16)}
        save_file(t, path)
        results.append(r)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    got = load_file(path)["kv"]
    assert got.shape == (64, 128) and len(set(got.flatten().tolist())) == 1, "one rank's tensor, whole"
    with safe_open(path, framework="numpy") as f:
        assert f.get_tensor("kv").dtype == np.float16
    assert os.stat(d).st_mode & 0o040000
    print("ok vllm-shared")


def lmcache():
    """LMCache local disk: flat dir, in-place open('wb') rewrite, O_DIRECT sized by
    statvfs().f_bsize, readinto of the whole file, tmp + os.replace, glob, os.remove."""
    d = os.path.join(MNT, "lmcache")
    os.makedirs(d, exist_ok=True)
    bs = os.statvfs(d).f_bsize
    keys = []
    for i in range(6):
        key = f"llama@1@0@{i:016x}@bfloat16"
        data = blob(bs * 256, 100 + i)
        p = os.path.join(d, key + ".pt")
        with open(p, "wb") as f:
            f.write(data)
        with open(p, "wb") as f:  # in-place rewrite of the same name
            f.write(data[::-1])
        fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, len(data))
        assert os.readv(fd, [buf]) == len(data)
        os.close(fd)
        assert bytes(buf) == data[::-1]
        tmp = os.path.join(d, key + ".data.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(d, key + ".data"))
        out = bytearray(len(data))
        with open(os.path.join(d, key + ".data"), "rb") as f:
            assert f.readinto(out) == len(data)
        assert bytes(out) == data
        keys.append(key)
    assert len(glob.glob(os.path.join(d, "*.data"))) == 6
    for k in keys:
        os.remove(os.path.join(d, k + ".pt"))
    assert len(glob.glob(os.path.join(d, "*.pt"))) == 0
    print("ok lmcache")


def sglang():
    """SGLang HiCacheFile: numpy.tofile to *.tmp.<pid>.<tid>.<uuid> then os.replace;
    os.scandir of the whole flat dir on every batch lookup; readinto."""
    d = os.path.join(MNT, "sglang")
    os.makedirs(d, exist_ok=True)
    arrays = {}
    for i in range(40):
        key = f"{i:08x}_qwen_0_{4096}.bin"
        arr = np.arange(4096, dtype=np.float16) + i
        tmp = os.path.join(d, f"{key}.tmp.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex}")
        arr.tofile(tmp)
        os.replace(tmp, os.path.join(d, key))
        arrays[key] = arr
        if i % 8 == 7:  # a batch lookup lists the whole directory
            names = {e.name for e in os.scandir(d) if e.is_file()}
            assert all(k in names for k in arrays), "every published key is listed"
            assert not any(".tmp." in n for n in names)
    for key, arr in arrays.items():
        out = np.empty_like(arr)
        with open(os.path.join(d, key), "rb") as f:
            assert f.readinto(memoryview(out).cast("B")) == arr.nbytes
        assert np.array_equal(out, arr)
    print("ok sglang")


def llamacpp():
    """llama.cpp --slot-save-path: fopen("wb") and many sequential fwrite; fopen("rb"),
    seek to the end, tell, fread."""
    d = os.path.join(MNT, "llamacpp")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "slot0.bin")
    h = hashlib.sha256()
    chunks = 96
    with open(p, "wb") as f:
        for i in range(chunks):
            c = blob(1024 * 1024 + 17, i)  # odd sizes: writes straddle page boundaries
            h.update(c)
            f.write(c)
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        h2 = hashlib.sha256()
        while True:
            c = f.read(3 * 1024 * 1024)
            if not c:
                break
            h2.update(c)
    assert size == chunks * (1024 * 1024 + 17)
    assert h.digest() == h2.digest()
    print("ok llama.cpp")


def trtllm():
    """TRT-LLM connector: torch.save-like pickle to <hash>.pt, tmp+rename, hard links,
    exists, unlink."""
    d = os.path.join(MNT, "trtllm")
    os.makedirs(d, exist_ok=True)
    obj = {"k": np.ones((32, 32), dtype=np.float32), "meta": {"layer": 3}}
    p = os.path.join(d, "abc123.pt")
    with open(p + ".tmp", "wb") as f:
        pickle.dump(obj, f)
    os.rename(p + ".tmp", p)
    os.link(p, os.path.join(d, "alias.pt"))
    assert os.path.exists(os.path.join(d, "alias.pt"))
    assert os.stat(p).st_nlink == 2
    os.unlink(p)
    with open(os.path.join(d, "alias.pt"), "rb") as f:
        back = pickle.load(f)
    assert np.array_equal(back["k"], obj["k"]) and back["meta"] == {"layer": 3}
    print("ok trtllm")


def llmd_evictor():
    """llm-d fs backend with its external evictor: a hit touches the block's atime
    (utimensat, mtime kept); the evictor reads statvfs for the fill level and removes the
    blocks with the oldest st_atime first, then empty directories."""
    root = os.path.join(MNT, "llmd", "Qwen3-8B_9f3e", "tp0")
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(6):
        p = os.path.join(root, f"{i:032x}.bin")
        with open(p, "wb") as f:
            f.write(blob(512 * 1024, 300 + i))
        old = 1_700_000_000 + i  # a written block starts old
        os.utime(p, (old, old))
        paths.append(p)
    # hits on blocks 0 and 3: atime to now, mtime unchanged (llm-d's touch on a hit)
    for p in (paths[0], paths[3]):
        st = os.stat(p)
        os.utime(p, ns=(time.time_ns(), st.st_mtime_ns))
        assert os.stat(p).st_mtime_ns == st.st_mtime_ns
    st = os.statvfs(root)
    assert st.f_blocks > 0 and 0 <= st.f_bavail <= st.f_blocks and st.f_frsize > 0, st
    # evict the 4 coldest by atime: the touched blocks survive
    by_atime = sorted(paths, key=lambda p: os.stat(p).st_atime)
    for p in by_atime[:4]:
        os.unlink(p)
    assert sorted(os.listdir(root)) == sorted(os.path.basename(p) for p in (paths[0], paths[3]))
    for p in (paths[0], paths[3]):
        os.unlink(p)
    os.removedirs(root)
    assert not os.path.exists(os.path.join(MNT, "llmd", "Qwen3-8B_9f3e"))
    print("ok llm-d")


def dynamo_kvbm():
    """NVIDIA Dynamo KVBM disk tier (DYN_KVBM_DISK_CACHE_DIR): one file made with mkstemp and
    unlinked at once, sized with fallocate, then block-sized pwrite/pread at offsets for as
    long as the process lives. Nothing is left after the close: no restart survives it."""
    d = os.path.join(MNT, "kvbm")
    os.makedirs(d, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=d, prefix="kvbm-disk-cache-")
    os.unlink(path)
    block = 256 * 1024
    os.posix_fallocate(fd, 0, block * 16)
    assert os.fstat(fd).st_size == block * 16 and os.fstat(fd).st_nlink == 0
    blocks = {i: blob(block, 400 + i) for i in (0, 5, 15)}
    for i, data in blocks.items():
        assert os.pwrite(fd, data, i * block) == block
    for i, data in blocks.items():
        assert os.pread(fd, block, i * block) == data
    assert os.pread(fd, 16, 3 * block) == bytes(16), "an unwritten block reads as zeros"
    os.close(fd)
    assert os.listdir(d) == [], "the unlinked file is gone with its last descriptor"
    os.rmdir(d)
    print("ok dynamo-kvbm")


def people():
    """People: cp -r, du, find, rm -r, tar round trip."""
    import shutil
    import subprocess
    import tarfile
    src = os.path.join(MNT, "lmcache")
    dst = os.path.join(MNT, "copy", "lmcache")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    subprocess.run(["cp", "-r", src, dst], check=True)
    a = sorted(os.listdir(src))
    assert a == sorted(os.listdir(dst))
    for n in a:
        with open(os.path.join(src, n), "rb") as x, open(os.path.join(dst, n), "rb") as y:
            assert x.read() == y.read()
    du = subprocess.run(["du", "-sk", dst], check=True, capture_output=True, text=True).stdout
    assert int(du.split()[0]) > 0
    found = subprocess.run(["find", os.path.join(MNT, "copy"), "-name", "*.data"], check=True, capture_output=True, text=True).stdout
    assert len(found.split()) == len(a)
    tar = os.path.join(MNT, "copy", "x.tar")
    with tarfile.open(tar, "w") as t:
        t.add(dst, arcname="lmcache")
    with tarfile.open(tar) as t:
        assert len(t.getnames()) == len(a) + 1
    subprocess.run(["rm", "-r", os.path.join(MNT, "copy")], check=True)
    assert not os.path.exists(os.path.join(MNT, "copy"))
    shutil.rmtree(src)
    print("ok people")


if __name__ == "__main__":
    vllm_fs()
    vllm_shared()
    lmcache()
    sglang()
    llamacpp()
    trtllm()
    llmd_evictor()
    dynamo_kvbm()
    people()
