"""Reading files inside a hostile tree from the host: nothing resolves outside the root, nothing blocks,
nothing but a regular file of bounded size is read."""
import errno
import os
import stat
import threading

import pytest

from sandboxd.runtime import inroot

SECRET = "host-only secret\n"


@pytest.fixture
def host(tmp_path):
    """A host file outside every root, and a root to plant links in."""
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside:x:1:1::/:/bin/sh\n")
    return root, secret


def _read(root, path, limit=inroot.DEFAULT_LIMIT):
    return inroot.read_file(root, path, limit).decode()


def test_regular_file_is_read(host):
    root, _ = host
    assert _read(root, "/etc/passwd") == "inside:x:1:1::/:/bin/sh\n"
    assert _read(root, "etc/passwd").startswith("inside")


def test_dotdot_stays_in_root(host):
    root, secret = host
    rel = os.path.relpath(secret, root)  # ../host/secret
    with pytest.raises(OSError):
        _read(root, rel)
    assert _read(root, "/../../../etc/passwd").startswith("inside")  # '..' at the root is the root


def test_symlink_to_host_root_resolves_inside(host):
    root, secret = host
    (root / "hostroot").symlink_to("/")
    # /hostroot/etc/passwd is the root's own /etc/passwd, never the host's.
    assert _read(root, "/hostroot/etc/passwd").startswith("inside")
    (root / "up").symlink_to("../../..")
    assert _read(root, "/up/etc/passwd").startswith("inside")


def test_absolute_symlink_in_the_middle_resolves_inside(host):
    root, secret = host
    (root / "data").symlink_to(str(secret.parent))  # an absolute host path
    with pytest.raises(FileNotFoundError):
        _read(root, "/data/secret")  # looked up as <root>/<host dir>/secret, which is not there


def test_symlinked_file_is_refused(host):
    root, secret = host
    (root / "etc" / "shadow").symlink_to(str(secret))
    with pytest.raises(inroot.Refused):
        _read(root, "/etc/shadow")


def test_fifo_is_refused_without_blocking(host):
    root, _ = host
    os.mkfifo(root / "etc" / "group")
    done = threading.Event()
    errors = []

    def attempt():
        try:
            _read(root, "/etc/group")
        except OSError as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(30), "reading a FIFO blocked"
    assert isinstance(errors[0], inroot.Refused) and errors[0].errno == errno.EINVAL


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_is_refused(host):
    root, _ = host
    os.mknod(root / "etc" / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    with pytest.raises(inroot.Refused):
        _read(root, "/etc/zero")


def test_directory_is_refused(host):
    root, _ = host
    with pytest.raises(inroot.Refused):
        _read(root, "/etc")


def test_oversized_file_is_refused(host):
    root, _ = host
    (root / "big").write_bytes(b"x" * 2048)
    assert len(_read(root, "/big", 2048)) == 2048
    with pytest.raises(inroot.Refused) as got:
        _read(root, "/big", 2047)
    assert got.value.errno == errno.EFBIG


def test_is_dir_in(host):
    root, secret = host
    (root / "out").symlink_to(str(secret.parent))
    assert inroot.is_dir_in(root, "/etc") and not inroot.is_dir_in(root, "/etc/passwd")
    assert not inroot.is_dir_in(root, "/out")


# ---- stacks of layers ------------------------------------------------------------------------------------

@pytest.fixture
def layers(tmp_path):
    low = tmp_path / "low"
    (low / "usr" / "bin").mkdir(parents=True)
    (low / "bin").symlink_to("usr/bin")
    (low / "etc").mkdir()
    (low / "etc" / "passwd").write_text("low:x:1:1::/:/bin/sh\n")
    (low / "etc" / "os-release").write_text("ID=low\n")
    top = tmp_path / "top"
    top.mkdir()
    return [top, low]


def test_stack_reads_top_most_version(layers):
    top, low = layers
    assert inroot.Stack(layers).read("/etc/passwd") == b"low:x:1:1::/:/bin/sh\n"
    (top / "etc").mkdir()
    (top / "etc" / "passwd").write_text("top:x:2:2::/:/bin/sh\n")
    assert inroot.Stack(layers).read("/etc/passwd").startswith(b"top:")
    assert inroot.Stack(layers).read("/etc/os-release") == b"ID=low\n"  # directories merge


def test_stack_symlink_to_host_file_resolves_in_image(layers, tmp_path):
    top, low = layers
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    (top / "etc").mkdir()
    (top / "etc" / "passwd").symlink_to(str(secret))  # RUN ln -sf /host/file /etc/passwd
    with pytest.raises(FileNotFoundError):
        inroot.Stack(layers).read("/etc/passwd")
    # A symlink to a path the image has is followed inside the image.
    (top / "etc" / "passwd").unlink()
    (top / "etc" / "passwd").symlink_to("/etc/os-release")
    assert inroot.Stack(layers).read("/etc/passwd") == b"ID=low\n"


def test_stack_symlinked_directory_in_a_lower_layer_stays_in_image(layers, tmp_path):
    """A lower layer's /etc is a symlink to a host directory; the path walk must not follow it on the host."""
    top, low = layers
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "passwd").write_text(SECRET)
    mid = tmp_path / "mid"
    mid.mkdir()
    (mid / "etc").symlink_to(str(hostdir))
    stack = inroot.Stack([top, mid, low])
    with pytest.raises(FileNotFoundError):
        stack.read("/etc/passwd")
    assert stack.lookup("/etc/passwd") is None
    (mid / "etc").unlink()
    (low / "real-etc").mkdir()
    (low / "real-etc" / "os-release").write_text("ID=real\n")
    (mid / "etc").symlink_to("../../../real-etc")
    assert stack.read("/etc/os-release") == b"ID=real\n"  # '..' stops at the image's root


def test_stack_refuses_fifo_and_loops(layers):
    top, low = layers
    (top / "etc").mkdir()
    os.mkfifo(top / "etc" / "passwd")
    with pytest.raises(inroot.Refused):
        inroot.Stack(layers).read("/etc/passwd")
    (top / "loop").symlink_to("/loop")
    with pytest.raises(inroot.Refused):
        inroot.Stack(layers).read("/loop/x")


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and trusted xattrs need root")
def test_stack_whiteout_and_opaque_dir(layers):
    top, low = layers
    os.mknod(top / "bin", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    assert inroot.Stack(layers).lookup("/bin") is None
    (top / "etc").mkdir()
    os.setxattr(top / "etc", inroot.OPAQUE_XATTR, b"y")
    assert inroot.Stack(layers).lookup("/etc/passwd") is None


def test_stack_resolve_keeps_missing_tail(layers):
    assert inroot.Stack(layers).resolve("/bin/new/tool") == "/usr/bin/new/tool"
    assert inroot.Stack(layers).resolve("/bin") == "/bin"
    assert inroot.Stack(layers).is_dir("/bin") and not inroot.Stack(layers).is_dir("/etc/passwd")


# ---- exec: the user and cwd of a command come from the sandbox's files -----------------------------------

def _sandbox(tmp_path, layers):
    from sandboxd.runtime.base import SandboxSpec, TemplateImage

    upper = tmp_path / "sbx" / "disk" / "upper"
    (upper / "etc").mkdir(parents=True)
    image = TemplateImage(name="t", layers=tuple(layers), content_hash="h", workdir="/work")
    return tmp_path / "sbx", upper, SandboxSpec(id="s", image=image)


def test_exec_user_is_read_inside_the_sandbox(layers, tmp_path):
    from sandboxd.errors import Invalid
    from sandboxd.runtime.oci.execution import _user_and_cwd

    d, upper, spec = _sandbox(tmp_path, layers)
    assert _user_and_cwd(d, spec, "low", None) == (1, 1, "/", "/")  # the image's passwd; no /work: cwd /
    host = tmp_path / "host-passwd"
    host.write_text("intruder:x:7:7::/root:/bin/sh\n")
    (upper / "etc" / "passwd").symlink_to(str(host))  # what code in the sandbox can do
    with pytest.raises(Invalid):
        _user_and_cwd(d, spec, "intruder", "/")
    (upper / "etc" / "passwd").unlink()
    os.mkfifo(upper / "etc" / "passwd")
    done = threading.Event()
    got = []

    def attempt():
        try:
            _user_and_cwd(d, spec, "low", "/")
        except Invalid as exc:
            got.append(exc)
        done.set()

    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(30), "looking up a user blocked on a FIFO"
    assert got and got[0].code == "invalid_user"
    (upper / "work").symlink_to(str(tmp_path))  # a host directory
    (upper / "etc" / "passwd").unlink()
    assert _user_and_cwd(d, spec, "root", None)[3] == "/"


def test_stack_resolve_follows_a_dangling_directory_symlink_in_the_image(layers):
    top, low = layers
    (top / "app").symlink_to("/srv/app")  # /srv/app does not exist (yet)
    assert inroot.Stack(layers).resolve("/app/x") == "/srv/app/x"
    (top / "loop").symlink_to("/loop")
    with pytest.raises(inroot.Refused):
        inroot.Stack(layers).resolve("/loop/x")
