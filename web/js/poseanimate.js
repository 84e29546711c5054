// PoseAnimate Context Windows preview: draws the windows and fusion weights the sampler will use
// for a chosen frame count, and counts the UNet passes of a run. Frontend only: the preview
// settings are kept in node.properties and never reach the prompt.
import { app } from "../../../scripts/app.js";
import { countUnetCalls, countUnetPasses, validate, windowWeights, windows } from "./context_windows.js";

const NODE = "PoseAnimateContextWindows";
const PREVIEW = [
  // [name, default, max, tooltip]
  ["preview frames", 48, 4096, "Frames to preview the windows for (the length of your pose video). Preview only: not sent to the sampler."],
  ["preview steps", 20, 200, "Sampler steps, to count the UNet passes. Preview only."],
  ["preview step", 0, 199, "Which step's windows to draw (the uniform schedule moves them every step). Preview only."],
];
const COLORS = ["#4e9ff5", "#f5a54e", "#5fd17a", "#e86a8e", "#b28cf0", "#e8d65a", "#4fd0cf", "#f07d4f"];
const FONT = "11px sans-serif";

function options(node) {
  const value = (name) => node.widgets?.find((w) => w.name === name)?.value;
  const loop = value("closed_loop");
  return {
    length: value("length"), overlap: value("overlap"), stride: value("stride"),
    schedule: value("schedule"), fuse: value("fuse"), window_batch: value("window_batch"),
    closed_loop: loop === "on" ? true : loop === "off" ? false : null,
  };
}

function text(ctx, str, x, y, color = "#ccc", align = "left") {
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.fillText(str, x, y);
}

function draw(canvas, opts, frames, steps, step) {
  const ctx = canvas.getContext("2d");
  const W = canvas.clientWidth, H = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(W * dpr));
  canvas.height = Math.max(1, Math.round(H * dpr));
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, W, H);
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  const error = validate(opts);
  if (error) {
    text(ctx, "Cannot preview: " + error, 6, 12, "#ff7070");
    return;
  }
  const moving = opts.schedule === "uniform";
  const wins = windows(frames, opts, step);
  const fused = Array.from({ length: frames }, () => []);  // per frame: [window index, weight]
  wins.forEach((win, k) => {
    const w = windowWeights(win, frames, opts), last = new Map();
    win.forEach((f, i) => last.set(f, w[i]));
    for (const [f, v] of last) fused[f].push([k, v]);
  });

  const pad = 6, x0 = pad, plotW = W - 2 * pad, cell = plotW / frames;
  const header = moving ? `step ${step} of ${steps}: uniform windows move every step` : `same windows every step`;
  text(ctx, `${frames} frames → ${wins.length} window${wins.length > 1 ? "s" : ""} of ${wins[0].length} frames, ${header}`, x0, 10);

  const chartH = 34, footer = 34, top = 22;
  const rowsH = Math.max(10, H - top - chartH - footer - 14);
  const rowH = Math.min(12, rowsH / wins.length);
  wins.forEach((win, k) => {
    const y = top + k * rowH, w = windowWeights(win, frames, opts), peak = Math.max(...w);
    ctx.fillStyle = COLORS[k % COLORS.length];
    win.forEach((f, i) => {
      ctx.globalAlpha = 0.25 + 0.75 * (w[i] / peak);
      ctx.fillRect(x0 + f * cell, y, Math.max(1, cell - (cell > 4 ? 1 : 0)), Math.max(1, rowH - 1));
    });
    ctx.globalAlpha = 1;
    for (let i = 1; i < win.length; i++) {
      if (win[i] < win[i - 1]) {  // wraps past the last frame: arrows out at the right, in at the left
        ctx.fillStyle = "#fff";
        ctx.fillText("›", x0 + plotW - 4, y + rowH / 2);
        ctx.fillText("›", x0 - 5, y + rowH / 2);
        break;
      }
    }
  });

  const chartTop = top + wins.length * rowH + 6;
  text(ctx, "share of each window in each frame's fused prediction", x0, chartTop + 5, "#999");
  const barTop = chartTop + 11, barH = chartH - 11;
  fused.forEach((parts, f) => {
    const sum = parts.reduce((s, [, v]) => s + v, 0);
    if (sum === 0) {
      ctx.fillStyle = "#ff4040";
      ctx.fillRect(x0 + f * cell, barTop, Math.max(1, cell - 1), barH);
      return;
    }
    let y = barTop + barH;
    for (const [k, v] of parts) {
      const h = (barH * v) / sum;
      ctx.fillStyle = COLORS[k % COLORS.length];
      ctx.fillRect(x0 + f * cell, y - h, Math.max(1, cell - (cell > 4 ? 1 : 0)), h);
      y -= h;
    }
  });
  text(ctx, "0", x0, barTop + barH + 6, "#888");
  text(ctx, String(frames - 1), x0 + plotW, barTop + barH + 6, "#888", "right");

  const passes = countUnetPasses(frames, opts, steps);
  const calls = countUnetCalls(frames, opts, steps);
  const perStep = moving ? "the windows of each step" : `${wins.length} window${wins.length > 1 ? "s" : ""}`;
  const y = H - footer + 10;
  text(ctx, `${passes} UNet passes = ${steps} steps × ${perStep} × 2 (cfg > 1; half with cfg ≤ 1)`, x0, y, "#e0e0e0");
  text(ctx, `in ${calls} UNet calls of up to ${opts.window_batch} window${opts.window_batch > 1 ? "s" : ""} (window_batch)`, x0, y + 15, "#999");
}

app.registerExtension({
  name: "PoseAnimate.ContextWindows",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    node.properties ??= {};
    const canvas = document.createElement("canvas");
    canvas.style.width = "100%";
    canvas.style.height = "100%";
    let key = "";
    const refresh = () => {
      const p = node.properties;
      const frames = Math.max(1, Math.round(p["preview frames"]));
      const steps = Math.max(1, Math.round(p["preview steps"]));
      const step = Math.min(steps - 1, Math.max(0, Math.round(p["preview step"])));
      const opts = options(node);
      const next = JSON.stringify([opts, frames, steps, step, canvas.clientWidth, canvas.clientHeight]);
      if (next === key || !canvas.clientWidth) return;
      key = next;
      draw(canvas, opts, frames, steps, step);
    };
    for (const [name, value, max, tooltip] of PREVIEW) {
      node.properties[name] ??= value;
      const widget = node.addWidget("number", name, node.properties[name], (v) => {
        node.properties[name] = v;
        refresh();
      }, { min: 0, max, step: 10, step2: 1, round: 1, precision: 0, serialize: false });
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
      serialize: false, hideOnZoom: false, getMinHeight: () => 200, onDraw: refresh,
    });
    preview.serialize = false;
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
    node.setSize([Math.max(node.size[0], 420), node.computeSize()[1]]);
  },
});
