// Runs web/js/context_windows.js on every case of a cases JSON file and prints the results as JSON.
// Usage: node tests/js/context_cases.mjs web/js/context_windows.js tests/data/context_windows_cases.json
import { readFileSync } from "node:fs";

const [modulePath, casesPath] = process.argv.slice(2);
// Imported from a data: URL so Node treats the .js file as an ES module whatever package.json says.
const source = readFileSync(modulePath, "utf8");
const cw = await import("data:text/javascript;base64," + Buffer.from(source).toString("base64"));

const results = JSON.parse(readFileSync(casesPath, "utf8")).cases.map(({ frames, steps, options }) => {
  const error = cw.validate(options);
  if (error) return { error };
  const perStep = [];
  for (let step = 0; step < steps; step++) {
    const wins = cw.windows(frames, options, step);
    perStep.push({
      windows: wins,
      weights: wins.map((w) => cw.windowWeights(w, frames, options)),
      frame_weights: cw.frameShares(frames, options, step).map((m) => [...m.values()].reduce((a, b) => a + b, 0)),
    });
  }
  return {
    steps: perStep,
    passes: cw.countUnetPasses(frames, options, steps),
    passes_unguided: cw.countUnetPasses(frames, options, steps, false),
    calls: cw.countUnetCalls(frames, options, steps),
  };
});
process.stdout.write(JSON.stringify(results));
