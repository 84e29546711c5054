// Context-window arithmetic of sampling/context.py, for the Context Windows preview.
// Pure ES module (no DOM, no ComfyUI); tests/test_web_context.py checks it against the Python code.
// `opts` uses the Python field names: length, overlap, stride, schedule, fuse,
// closed_loop (null = the schedule's default, true, false), window_batch.

export const SCHEDULES = ["static", "uniform", "looped", "moore"];
export const FUSES = ["flat", "pyramid", "overlap-linear"];

export function validate(opts) {
  if (!SCHEDULES.includes(opts.schedule))
    return `unknown context schedule '${opts.schedule}'; valid schedules: ${SCHEDULES.join(", ")}`;
  if (!FUSES.includes(opts.fuse)) return `unknown fuse method '${opts.fuse}'; valid methods: ${FUSES.join(", ")}`;
  if (opts.length < 1) return `context length must be at least 1, got ${opts.length}`;
  if (!(opts.overlap >= 0 && opts.overlap < opts.length))
    return `context overlap must be in [0, length); got overlap ${opts.overlap} with length ${opts.length}`;
  if (opts.stride < 1) return `context stride must be at least 1, got ${opts.stride}`;
  if (opts.window_batch < 1) return `window_batch must be at least 1, got ${opts.window_batch}`;
  return null;
}

export function loops(opts) {
  return opts.closed_loop == null ? opts.schedule === "moore" : Boolean(opts.closed_loop);
}

// The bit-reversed fraction of `val` over 64 bits: 0, 1/2, 1/4, 3/4, 1/8, ...
export function orderedHalving(val) {
  let v = BigInt(val), r = 0n;
  for (let i = 0; i < 64; i++) {
    r = (r << 1n) | (v & 1n);
    v >>= 1n;
  }
  return Number(r) / 2 ** 64;
}

// Python's round(): halves go to the even neighbour.
export function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f;
  if (d !== 0.5) return d < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}

const range = (start, stop) => Array.from({ length: Math.max(0, stop - start) }, (_, i) => start + i);

function orderedHalvingWindows(n, opts, step) {
  const size = opts.length, overlap = opts.overlap;
  if (n <= size) return [range(0, n)];
  let levels = 1;  // ceil(log2(n / size)) + 1, in integers
  while (size * 2 ** (levels - 1) < n) levels++;
  const stride = Math.min(opts.stride, levels);
  const shift = orderedHalving(step);
  const out = [];
  for (let level = 0; level < stride; level++) {
    const stepSize = 2 ** level;
    const pad = roundHalfEven(n * shift);
    const end = n + pad + (loops(opts) ? 0 : -overlap);
    for (let j = Math.trunc(shift * stepSize) + pad; j < end; j += size * stepSize - overlap) {
      out.push(range(0, size).map((i) => (j + i * stepSize) % n));
    }
  }
  return out;
}

function staticWindows(n, opts) {
  const size = opts.length;
  if (n <= size) return [range(0, n)];
  const starts = [];
  for (let s = 0; s < n - size; s += size - opts.overlap) starts.push(s);
  starts.push(n - size);
  return starts.map((s) => range(s, s + size));
}

export function windows(numFrames, opts, step = 0) {
  switch (opts.schedule) {
    case "static": return staticWindows(numFrames, opts);
    case "uniform": return orderedHalvingWindows(numFrames, opts, step);
    case "looped":
    case "moore": return orderedHalvingWindows(numFrames, opts, 0);
  }
  throw new Error(validate(opts));
}

export function windowWeights(window, numFrames, opts) {
  const L = window.length;
  if (opts.fuse === "pyramid") return range(0, L).map((i) => Math.min(i + 1, L - i));
  const w = new Array(L).fill(1);
  const ramp = opts.overlap;
  if (opts.fuse === "flat" || ramp === 0 || L >= numFrames) return w;
  if (window[0] !== 0) for (let i = 0; i < ramp; i++) w[i] = (i + 1) / (ramp + 1);
  if (window[L - 1] !== numFrames - 1) for (let i = 0; i < ramp; i++) w[L - ramp + i] = (ramp - i) / (ramp + 1);
  return w;
}

// Per frame, the weight each window of one step gives it in the fusion: Map(window index -> weight).
// A frame listed twice in one strided window keeps the last, as in the engine's indexed update.
export function frameShares(numFrames, opts, step = 0) {
  const shares = Array.from({ length: numFrames }, () => new Map());
  windows(numFrames, opts, step).forEach((win, k) => {
    const w = windowWeights(win, numFrames, opts);
    win.forEach((f, i) => shares[f].set(k, w[i]));
  });
  return shares;
}

// Window evaluations over a run (each a UNet pass of `length` frames), x2 with guidance (cfg > 1).
export function countUnetPasses(numFrames, opts, steps, guidance = true) {
  let sum = 0;
  for (let s = 0; s < steps; s++) sum += windows(numFrames, opts, s).length;
  return sum * (guidance ? 2 : 1);
}

// UNet calls: `window_batch` windows per call, both guidance branches in the same call.
export function countUnetCalls(numFrames, opts, steps) {
  let sum = 0;
  for (let s = 0; s < steps; s++) sum += Math.ceil(windows(numFrames, opts, s).length / opts.window_batch);
  return sum;
}
