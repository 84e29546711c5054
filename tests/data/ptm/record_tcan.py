"""Record TCAN's own PTM arithmetic (eccv2024tcan/TCAN@2b86e73) on small inputs, for
PoseAnimate's tests/data/ptm_tcan.safetensors. TCAN's functions are taken from its source at run
time (ast), not copied. Run: venv/bin/python record.py OUT"""
import ast, math, os, subprocess, sys
import cv2, numpy as np, torch, torch.nn.functional as F
from einops import rearrange, repeat
from safetensors.torch import save_file

GIT = "/work/.mirror/eccv2024tcan+TCAN/repo"
COMMIT = "2b86e73"

def source(path):
    return subprocess.check_output(["git", "--git-dir", GIT, "show", f"{COMMIT}:{path}"], text=True)

def pick(path, names, cls=None):
    src = source(path)
    tree = ast.parse(src)
    nodes = tree.body
    if cls:
        nodes = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    out = {}
    for n in nodes:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names:
            out[n.name] = ast.get_source_segment(src, n)
    assert set(out) == set(names), (path, cls, names, list(out))
    return out

g = dict(math=math, np=np, cv2=cv2, torch=torch, F=F, os=os, nn=torch.nn, rearrange=rearrange, repeat=repeat)
for code in pick("magicanimate/utils/util.py", ["calc_tau", "get_taumap"]).values():
    exec(code, g)
exec(pick("magicanimate/models/motion_module.py", ["PositionalEncoding"])["PositionalEncoding"], g)
methods = pick("magicanimate/models/orig_attention.py",
               ["reshape_heads_to_batch_dim", "reshape_batch_dim_to_heads", "_attention"], cls="CrossAttention")
methods.update(pick("magicanimate/models/motion_module.py", ["forward"], cls="VersatileAttention"))
import textwrap
# ast.get_source_segment drops a method's first-line indent: put it back, then indent into the class
body = "".join(textwrap.indent(textwrap.dedent("    " + m), "    ") + "\n" for m in methods.values())

class Base(torch.nn.Module):
    pass
ns = dict(g)
exec("class TCANTemporalAttention(Base):\n" + body, dict(ns, Base=Base), ns)
TCANTemporalAttention = ns["TCANTemporalAttention"]

def tcan_attention(dim, heads, max_len=24):
    a = TCANTemporalAttention()
    a.heads, a.scale = heads, (dim // heads) ** -0.5
    a.upcast_attention = a.upcast_softmax = False
    a.group_norm, a.added_kv_proj_dim = None, None
    a._use_memory_efficient_attention_xformers, a._slice_size = False, None
    a.use_learnable_taumap = False
    a.attention_mode, a.is_cross_attention = "Temporal", False
    a.to_q = torch.nn.Linear(dim, dim, bias=False)
    a.to_k = torch.nn.Linear(dim, dim, bias=False)
    a.to_v = torch.nn.Linear(dim, dim, bias=False)
    a.to_out = torch.nn.ModuleList([torch.nn.Linear(dim, dim), torch.nn.Dropout(0.0)])
    a.pos_encoder = g["PositionalEncoding"](dim, dropout=0.0, max_len=max_len)
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return a.eval()

def poses(frames, height, width, seed):
    rng = np.random.default_rng(seed)
    out = np.zeros((frames, height, width, 3), np.uint8)
    centre = np.array([width * 0.45, height * 0.5])
    limbs = rng.uniform(-0.35, 0.35, size=(5, 2)) * [width, height]
    for f in range(frames):
        c = centre + [f * width * 0.03, 0]
        for k, d in enumerate(limbs):
            colour = tuple(int(v) for v in rng.integers(60, 255, 3))
            p0 = tuple(int(v) for v in c)
            p1 = tuple(int(v) for v in c + d + rng.normal(0, 1.5, 2))
            cv2.line(out[f], p0, p1, colour, 2)
    return out

def explicit(a, hidden, frames, tau_grid):
    """The same arithmetic with tau on the real (h, w) grid, written out (for the non-square case)."""
    bf, d, c = hidden.shape
    x = rearrange(hidden, "(b f) d c -> (b d) f c", f=frames)
    x = a.pos_encoder(x)
    q, k, v = (a.reshape_heads_to_batch_dim(l(x)) for l in (a.to_q, a.to_k, a.to_v))
    s = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(-1, -2), beta=0, alpha=a.scale)
    b = bf // frames
    s = s.reshape(b, d, a.heads, frames, frames) / tau_grid.reshape(1, d, 1, 1, 1)
    o = torch.bmm(s.reshape(-1, frames, frames).softmax(-1), v)
    o = a.to_out[0](a.reshape_batch_dim_to_heads(o))
    return rearrange(o, "(b d) f c -> (b f) d c", d=d)

torch.manual_seed(0)
FRAMES, DIM, HEADS = 4, 16, 8
out = {}
# square: 64x64 pose images, latent levels 8x8 and 4x4
pa = poses(FRAMES, 64, 64, 1)
tau = torch.from_numpy(g["get_taumap"](list(pa))).float()
a = tcan_attention(DIM, HEADS)
out["square_poses"] = torch.from_numpy(pa)
out["square_tau"] = tau
for name, p in a.state_dict().items():
    if not name.endswith("pe"):
        out[f"attn.{name}"] = p.detach().clone()
with torch.no_grad():
    for s in (8, 4):
        hidden = torch.randn(2 * FRAMES, s * s, DIM)
        out[f"square_hidden_{s}"] = hidden
        out[f"square_out_{s}"] = a(hidden, video_length=FRAMES, temporal_taumap=tau)
        # the map TCAN's _attention applies at this level
        out[f"square_tau_{s}"] = F.interpolate(tau[None, None], (s, s))[0, 0]
# non-square: 64 high, 48 wide (latent 8x6); TCAN's square reshape cannot take 48 pixels
pb = poses(FRAMES, 64, 48, 2)
taub = torch.from_numpy(g["get_taumap"](list(pb))).float()
out["nonsquare_poses"] = torch.from_numpy(pb)
out["nonsquare_tau"] = taub
with torch.no_grad():
    hidden = torch.randn(2 * FRAMES, 8 * 6, DIM)
    grid = F.interpolate(taub[None, None], (8, 6))[0, 0]
    out["nonsquare_hidden"] = hidden
    out["nonsquare_tau_grid"] = grid
    out["nonsquare_out"] = explicit(a, hidden, FRAMES, grid)
    try:
        a(hidden, video_length=FRAMES, temporal_taumap=taub)
        raise SystemExit("TCAN's square reshape unexpectedly accepted 8x6")
    except RuntimeError as e:
        print("TCAN on 8x6 fails as expected:", str(e)[:80])
    # sanity: the explicit path reproduces TCAN on the square case
    s = 8
    e = explicit(a, out["square_hidden_8"], FRAMES, out["square_tau_8"])
    print("explicit vs TCAN (square):", (e - out["square_out_8"]).abs().max().item())
print("tau square: mean %.4f max %.4f, ones %.3f" % (tau.mean(), tau.max(), (tau == 1).float().mean()))
print("tau nonsquare: mean %.4f max %.4f" % (taub.mean(), taub.max()))
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1],
          metadata={"source": f"eccv2024tcan/TCAN@{COMMIT}", "frames": str(FRAMES), "heads": str(HEADS),
                    "opencv": cv2.__version__, "torch": torch.__version__, "numpy": np.__version__})
print("wrote", sys.argv[1], os.path.getsize(sys.argv[1]))
