// PoseAnimate Context Windows preview: draws the windows and fusion weights the sampler will use
// for a chosen frame count, and counts the UNet passes of a run. Frontend only: the preview
// settings are kept in node.properties and never reach the prompt.
import { app } from "../../../scripts/app.js";
import {
  countUnetCalls, countUnetPasses, frameShares, loops, validate, windowWeights, windows,
} from "./context_windows.js";

const NODE = "PoseAnimateContextWindows";
const PREVIEW = [
  // [name, default, min, max, tooltip]; "Preview only": kept in node.properties, not sent to the sampler.
  ["preview frames", 48, 1, 4096, "Frames to preview the windows for (the length of your pose video). Preview only."],
  ["preview steps", 20, 1, 200, "Sampler steps, to count the UNet passes. Preview only."],
  ["preview step", 0, 0, 199, "Which step's windows to draw, from 0 (uniform windows shift every step). Preview only."],
];
const COLORS = ["#4e9ff5", "#f5a54e", "#5fd17a", "#e86a8e", "#b28cf0", "#e8d65a", "#4fd0cf", "#f07d4f"];
const FONT = "11px sans-serif", LINE = 14, PAD = 6, BAR = 24, MAX_ROW = 14, MIN_ROW = 2;

function options(node) {
  const value = (name) => node.widgets?.find((w) => w.name === name)?.value;
  const loop = value("closed_loop");
  return {
    length: value("length"), overlap: value("overlap"), stride: value("stride"),
    schedule: value("schedule"), fuse: value("fuse"), window_batch: value("window_batch"),
    closed_loop: loop === "on" ? true : loop === "off" ? false : null,
  };
}

function wrap(ctx, str, maxW) {
  const lines = [""];
  for (const word of str.split(" ")) {
    const next = lines.at(-1) ? lines.at(-1) + " " + word : word;
    if (lines.at(-1) && ctx.measureText(next).width > maxW) lines.push(word);
    else lines[lines.length - 1] = next;
  }
  return lines;
}

function write(ctx, lines, x, y, color) {
  ctx.fillStyle = color;
  lines.forEach((line, i) => ctx.fillText(line, x, y + i * LINE));
  return y + lines.length * LINE;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// The texts around the picture, for the frame count and options.
function describe(opts, frames, steps, step, wins) {
  const moving = opts.schedule === "uniform";
  const counts = moving ? Array.from({ length: steps }, (_, s) => windows(frames, opts, s).length) : [wins.length];
  const lo = Math.min(...counts), hi = Math.max(...counts);
  const wraps = wins.some((win) => win.some((f, i) => i > 0 && f < win[i - 1]));
  return {
    head: `${plural(frames, "frame")} → ${plural(wins.length, "window")} of ${wins[0].length}` +
      (opts.schedule === "static" ? "" : `, closed loop ${loops(opts) ? "on" : "off"}`) +
      (moving ? `; step ${step} shown: uniform windows shift every step.` : "; the same every step."),
    legend: `Brighter = more weight (${opts.fuse}).` + (wraps ? " ▸ wraps past the last frame to frame 0." : ""),
    chart: "Each window's share of each frame:",
    passes: `${countUnetPasses(frames, opts, steps)} UNet passes = ${plural(steps, "step")} × ` +
      `${lo === hi ? plural(lo, "window") : `${lo}–${hi} windows`} × 2 (cfg > 1; half with cfg ≤ 1)`,
    calls: `= ${countUnetCalls(frames, opts, steps)} UNet calls: up to ${plural(opts.window_batch, "window")} ` +
      "per call (window_batch), both guidance branches together.",
  };
}

function tickStep(frames, width) {
  const fit = frames / Math.max(1, width / 40);
  return [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024].find((s) => s >= fit) ?? 2048;
}

// Draws the preview into `canvas`; returns the height it wants (10 px rows, 120 px of rows at most).
function draw(canvas, dpr, opts, frames, steps, step) {
  const ctx = canvas.getContext("2d");
  const W = canvas.clientWidth, H = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(W * dpr));
  canvas.height = Math.max(1, Math.round(H * dpr));
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, W, H);
  ctx.font = FONT;
  ctx.textBaseline = "top";
  const x0 = PAD, plotW = W - 2 * PAD, cell = plotW / frames, gap = cell > 4 ? 1 : 0;
  const error = validate(opts);
  if (error) return write(ctx, wrap(ctx, "Cannot preview: " + error, plotW), x0, PAD, "#ff7070") + PAD;

  const wins = windows(frames, opts, step);
  const weights = wins.map((win) => windowWeights(win, frames, opts));
  const shares = frameShares(frames, opts, step);
  const t = describe(opts, frames, steps, step, wins);
  const lines = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, wrap(ctx, v, plotW)]));
  const textH = Object.values(lines).reduce((s, l) => s + l.length * LINE, 0);
  const other = 2 * PAD + textH + BAR + LINE + 20;
  const rowH = Math.max(MIN_ROW, Math.min(MAX_ROW, (H - other) / wins.length));

  let y = write(ctx, lines.head, x0, PAD, "#ddd") + 4;
  wins.forEach((win, k) => {
    const w = weights[k], peak = Math.max(...w), top = y + k * rowH;
    ctx.fillStyle = COLORS[k % COLORS.length];
    win.forEach((f, i) => {
      ctx.globalAlpha = 0.2 + 0.8 * (w[i] / peak);
      ctx.fillRect(x0 + f * cell, top, Math.max(1, cell - gap), Math.max(1, rowH - 1));
    });
    ctx.globalAlpha = 1;
    if (win.some((f, i) => i > 0 && f < win[i - 1])) {
      ctx.fillStyle = "#fff";
      for (const x of [x0 + plotW + 1, x0 - 7]) {  // out at the right edge, back in at the left
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x + 6, top + (rowH - 1) / 2);
        ctx.lineTo(x, top + rowH - 1);
        ctx.fill();
      }
    }
  });
  y = write(ctx, lines.legend, x0, y + wins.length * rowH + 4, "#999") + 4;
  y = write(ctx, lines.chart, x0, y, "#999");

  for (let f = 0; f < frames; f++) {
    const parts = [...shares[f]], sum = parts.reduce((s, [, v]) => s + v, 0);
    let bottom = y + BAR;
    if (!sum) {  // a frame no window covers: the options are broken
      ctx.fillStyle = "#ff4040";
      ctx.fillRect(x0 + f * cell, y, Math.max(1, cell - gap), BAR);
    }
    for (const [k, v] of parts) {
      ctx.fillStyle = COLORS[k % COLORS.length];
      ctx.fillRect(x0 + f * cell, bottom - (BAR * v) / sum, Math.max(1, cell - gap), (BAR * v) / sum);
      bottom -= (BAR * v) / sum;
    }
  }
  y += BAR + 2;
  ctx.fillStyle = "#888";
  for (let f = 0, every = tickStep(frames, plotW); f < frames; f += every) {
    ctx.fillRect(x0 + (f + 0.5) * cell, y, 1, 3);
    ctx.textAlign = "center";
    ctx.fillText(String(f), Math.max(x0 + 3, x0 + (f + 0.5) * cell), y + 4);
  }
  ctx.textAlign = "left";
  y = write(ctx, lines.passes, x0, y + LINE + 6, "#eee");
  write(ctx, lines.calls, x0, y, "#999");
  return other + Math.min(wins.length * 10, 120);
}

app.registerExtension({
  name: "PoseAnimate.ContextWindows",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    node.properties ??= {};
    const canvas = document.createElement("canvas");
    Object.assign(canvas.style, { width: "100%", height: "100%", display: "block" });
    let key = "", needed = 180;
    const refresh = () => {
      const p = node.properties;
      const frames = Math.max(1, Math.round(p["preview frames"]));
      const steps = Math.max(1, Math.round(p["preview steps"]));
      const step = Math.min(steps - 1, Math.max(0, Math.round(p["preview step"])));
      const opts = options(node);
      const dpr = (window.devicePixelRatio || 1) * (app.canvas?.ds?.scale ?? 1);  // sharp at any canvas zoom
      const next = JSON.stringify([opts, frames, steps, step, canvas.clientWidth, canvas.clientHeight, dpr]);
      if (next === key || !canvas.clientWidth) return;
      key = next;
      needed = draw(canvas, dpr, opts, frames, steps, step);
      if (needed > canvas.clientHeight + 1) {  // grow the node to fit the text and rows (never shrink it)
        node.setSize([node.size[0], node.size[1] + needed - canvas.clientHeight]);
        node.setDirtyCanvas(true, true);
      }
    };
    for (const [name, value, min, max, tooltip] of PREVIEW) {
      node.properties[name] ??= value;
      const widget = node.addWidget("number", name, node.properties[name], (v) => {
        node.properties[name] = v;
      }, { min, max, step: 10, step2: 1, round: 1, precision: 0, serialize: false });
      widget.serialize = false;
      widget.tooltip = tooltip;
    }
    for (const widget of node.widgets) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const r = callback?.apply(this, args);
        refresh();
        return r;
      };
    }
    const preview = node.addDOMWidget("context preview", "poseanimate_context_preview", canvas, {
      serialize: false, hideOnZoom: false, getMinHeight: () => needed, onDraw: refresh,
    });
    preview.serialize = false;
    new ResizeObserver(refresh).observe(canvas);
    const onConfigure = node.onConfigure;
    node.onConfigure = function (...args) {
      const r = onConfigure?.apply(this, args);
      for (const [name] of PREVIEW) {
        const widget = this.widgets.find((w) => w.name === name);
        if (widget) widget.value = this.properties[name];
      }
      refresh();
      return r;
    };
    node.setSize([Math.max(node.size[0], 440), node.computeSize()[1]]);
  },
});
