"""Screenshot a workflow in a running ComfyUI with headless Chromium (a developer tool).

    python tools/screenshot.py WORKFLOW.json OUT.png [--url http://127.0.0.1:8188] [--node TYPE | --fit [--crop]]

Opens the ComfyUI page in a fresh browser profile, loads WORKFLOW.json into the canvas with the
page's ``app.loadGraphData``, waits for it to draw and saves a PNG: the whole window (``--fit``:
zoomed to show every node; with ``--crop``, only the nodes and groups, as for a template thumbnail)
or, with ``--node``, the first node of that type. Prints the page's errors and failed requests, so a
frontend extension that failed to load shows up, and exits with status 1 after saving when a node
type of the workflow is not registered in that ComfyUI (the frontend's "Some Nodes Are Missing"
case).

It loads the workflow only once the page has finished ComfyUI's setup (``window.app`` is set after
the node definitions from /object_info are registered): the app's graph and canvas exist before
that, and a workflow loaded in between is checked against an empty node list, so the frontend
reports every node type, core ones included, as missing.

Needs Playwright for Python (``pip install playwright``) and a Chromium; Debian's
(``apt-get install chromium``) is used by default, no browser download needed.
"""

import argparse
import json
import os
import sys
import tempfile

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

APP = "window.app"  # assigned by the page once app.setup() (node registration included) has finished

LOAD = """async ([workflow, nodeType, name]) => {
  const app = %s;
  await app.loadGraphData(workflow, true, true, name);
  if (!app.graph.nodes.length) return "the workflow loaded no nodes";
  if (nodeType && !app.graph.nodes.some((n) => n.type === nodeType)) return `no ${nodeType} node in the workflow`;
  return null;
}""" % APP

MISSING = """(workflow) => [...new Set(workflow.nodes.map((n) => n.type))]
  .filter((type) => !(type in window.LiteGraph.registered_node_types))"""

# Centres the nodes (all, with their groups, or the first of a type) below the menu bars and above
# `bottom` free pixels, zoomed to fit (at most `zoom`), and returns their rectangle on the page, title
# bars included.
FOCUS = """([nodeType, zoom, margin, bottom]) => {
  const app = %s, title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30, bars = 90;
  const nodes = nodeType ? [app.graph.nodes.find((n) => n.type === nodeType)] : app.graph.nodes;
  const boxes = nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]);
  if (!nodeType) boxes.push(...(app.graph.groups ?? []).map((g) => [g.pos[0], g.pos[1], g.size[0], g.size[1]]));
  const left = Math.min(...boxes.map((b) => b[0])), top = Math.min(...boxes.map((b) => b[1]));
  const w = Math.max(...boxes.map((b) => b[0] + b[2])) - left, h = Math.max(...boxes.map((b) => b[1] + b[3])) - top;
  const ds = app.canvas.ds, box = app.canvas.canvas.getBoundingClientRect(), free = box.height - bars - bottom;
  ds.scale = Math.min(zoom, (0.96 * box.width) / w, (0.96 * free) / h);
  ds.offset = [box.width / 2 / ds.scale - left - w / 2, (bars + free / 2) / ds.scale - top - h / 2];
  app.canvas.setDirty(true, true);
  return {
    x: box.left + (left + ds.offset[0]) * ds.scale - margin,
    y: box.top + (top + ds.offset[1]) * ds.scale - margin,
    width: w * ds.scale + 2 * margin,
    height: h * ds.scale + 2 * margin,
  };
}""" % APP


def quiet_settings(route):
    """The user's settings, without the first-run template browser, the minimap and the canvas statistics
    (for this page only)."""
    if route.request.method != "GET":
        return route.continue_()
    response = route.fetch()
    settings = response.json()
    settings.update({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False})
    route.fulfill(response=response, json=settings)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workflow", help="workflow JSON file (the UI format ComfyUI saves)")
    p.add_argument("out", help="PNG file to write")
    p.add_argument("--url", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    p.add_argument("--node", help="only this node type, e.g. PoseAnimateContextWindows")
    p.add_argument("--fit", action="store_true",
                   help="zoom and centre the canvas on all nodes (else the workflow's own view)")
    p.add_argument("--crop", action="store_true", help="with --fit, save only the nodes and groups, not the window")
    p.add_argument("--zoom", type=float, default=1.5,
                   help="largest canvas zoom with --node or --fit (default %(default)s)")
    p.add_argument("--size", default="1600x1000", help="window size WxH (default %(default)s)")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to wait after loading (default %(default)s)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable (default %(default)s)")
    args = p.parse_args(argv)
    if args.crop and not args.fit:
        p.error("--crop needs --fit")

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("screenshot: Playwright is not installed; run `pip install playwright` (Chromium itself comes "
                 "from `apt-get install chromium`, see --chromium)")
    with open(args.workflow) as f:
        workflow = json.load(f)
    width, height = (int(v) for v in args.size.lower().split("x"))

    errors = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="comfy-shot-") as profile:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        page = browser.new_page()
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status} {r.url}"))
        page.on("requestfailed", lambda r: errors.append(f"{r.failure} {r.url}"))
        origin = "/".join(args.url.split("/")[:3])
        page.route(lambda url: not url.startswith(origin), lambda route: route.abort())  # ComfyUI only
        page.route("**/api/settings", quiet_settings)
        page.goto(args.url, wait_until="networkidle", timeout=60_000)
        page.wait_for_function(f"{APP}?.graph && {APP}?.canvas", timeout=60_000)
        page.wait_for_timeout(1000)  # the page then restores its previous (default) workflow
        missing = page.evaluate(MISSING, workflow)
        name = os.path.splitext(os.path.basename(args.workflow))[0]
        problem = page.evaluate(LOAD, [workflow, args.node, name])
        if problem:
            sys.exit(f"screenshot: {problem} ({args.workflow})")
        page.wait_for_timeout(args.wait * 1000)
        clip = None
        if args.node or args.fit:
            # --crop keeps the nodes clear of the canvas toolbar (zoom, fit view) at the bottom right
            rect = page.evaluate(FOCUS, [args.node, args.zoom, 12, 70 if args.crop else 0])
            clip = rect if args.node or args.crop else None
            page.wait_for_timeout(500)
        shown = page.evaluate(f"{APP}.graph.nodes.length")
        if shown != len(workflow["nodes"]):
            sys.exit(f"screenshot: the page shows {shown} nodes, not the workflow's {len(workflow['nodes'])}: it "
                     f"replaced the workflow after loading it (still starting up? try a longer --wait)")
        page.screenshot(path=args.out, clip=clip)
        browser.close()
    for e in errors:
        print("page error:", e)
    print(f"wrote {args.out}")
    if missing:
        sys.exit(f"screenshot: node types this ComfyUI does not have: {', '.join(missing)} (install the node "
                 f"pack that provides them, or fix the type names in {args.workflow})")


if __name__ == "__main__":
    main()
