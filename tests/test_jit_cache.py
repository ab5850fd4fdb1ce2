"""The package's compiled-code cache (``gpu_bytepiece.jit_cache``): where, keyed on what, and the note."""

from __future__ import annotations

from gpu_bytepiece import Tokenizer, jit_cache


def test_tokenizer_code_is_cached_in_the_package_folder(monkeypatch):
    from gpu_bytepiece import aot

    monkeypatch.setenv("GPU_BYTEPIECE_AOT", "0")  # the JIT's one-chunk driver, not the ahead-of-time one
    monkeypatch.delitem(aot._state, "mod", raising=False)
    tok = Tokenizer(device="cpu")
    assert not tok._backend.ahead_of_time
    assert tok.encode("hello world") == Tokenizer(device="cpu").encode("hello world")
    aot._state.pop("mod", None)
    root = jit_cache.cache_dir()
    assert root is not None and root.name.startswith(jit_cache.source_key()[:16])
    # the driver that inlines core/lattice.py (a short text runs the one-chunk driver), and the
    # trie builder, under the content key
    assert any((root / "cpu_fallback").glob("tokenize.encode_chunk-*.nbi"))
    assert any((root / "cpu_fallback").glob("double_array.build_double_array-*.nbi"))
    from gpu_bytepiece.cpu_fallback import tokenize

    assert str(tokenize.encode_chunk._cache._cache_path).startswith(str(root))


def test_cache_folders_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("GPU_BYTEPIECE_CACHE_DIR", str(tmp_path / "own"))
    assert jit_cache._roots() == [tmp_path / "own"]
    monkeypatch.delenv("GPU_BYTEPIECE_CACHE_DIR")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    roots = jit_cache._roots()
    assert roots[0] == tmp_path / "xdg" / "gpu-bytepiece"
    assert roots[-1].parts[-2:] == ("__pycache__", "jit")  # the package's own, last
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nb"))
    assert jit_cache._roots()[0] == tmp_path / "nb" / "gpu-bytepiece"


def test_unwritable_folder_is_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder cannot be made under a file, whoever runs the test
    assert not jit_cache._writable(blocker / "gpu-bytepiece")
    assert jit_cache._writable(tmp_path / "rw" / "deep")


def test_announce_says_once_when_cold(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(jit_cache._state, "dir", tmp_path)
    monkeypatch.setitem(jit_cache._state, "said", set())
    jit_cache.announce("the tokenizer", "cpu_fallback/tokenize")
    jit_cache.announce("the tokenizer", "cpu_fallback/tokenize")
    err = capsys.readouterr().err
    assert err.count("gpu-bytepiece: compiling the tokenizer for this machine (first run only)") == 1
    (tmp_path / "cpu_fallback").mkdir()
    (tmp_path / "cpu_fallback" / "tokenize.encode_segments-80.py311.nbi").write_bytes(b"")
    jit_cache.announce("the trainer", "cpu_fallback/tokenize")
    assert capsys.readouterr().err == ""


def test_shipped_code_is_copied_for_this_machine_only(monkeypatch, tmp_path):
    # a wheel's gpu_bytepiece/_jit/<tag>/ (setup.py, precompile.py): copied into the
    # user's folder when compiled for this machine, each index after its data files
    shipped = tmp_path / "_jit"
    tag = shipped / "0123456789abcdef-py311"
    (tag / "cpu_fallback").mkdir(parents=True)
    (tag / "cpu_fallback" / "tokenize.encode_segments-80.py311.nbi").write_bytes(b"index")
    (tag / "cpu_fallback" / "tokenize.encode_segments-80.py311.1.nbc").write_bytes(b"code")
    (tag / "tries").mkdir()
    (tag / "tries" / "0123.npz").write_bytes(b"arrays")  # the same on any machine
    monkeypatch.setattr(jit_cache, "SHIPPED", shipped)
    user = tmp_path / "user" / tag.name
    (tag / jit_cache.MACHINE_FILE).write_text("('x86_64-unknown-linux-gnu', 'another cpu', '')\n")
    jit_cache._seed(user)
    assert not (user / "cpu_fallback").exists()
    assert (user / "tries" / "0123.npz").read_bytes() == b"arrays"
    (tag / jit_cache.MACHINE_FILE).write_text(jit_cache.machine() + "\n")
    jit_cache._seed(user)
    assert sorted(p.name for p in (user / "cpu_fallback").iterdir()) == [
        "tokenize.encode_segments-80.py311.1.nbc", "tokenize.encode_segments-80.py311.nbi"]
    # what the user's folder already has is kept
    (user / "cpu_fallback" / "tokenize.encode_segments-80.py311.nbi").write_bytes(b"compiled here")
    jit_cache._seed(user)
    assert (user / "cpu_fallback" / "tokenize.encode_segments-80.py311.nbi").read_bytes() == b"compiled here"
