// A small NAdam port in JavaScript (Node, no packages), written to show how a
// port is checked with nadam_ref's golden cases:
//
//     nadam-ref golden run --suite --profile optax -- node examples/js/nadam.mjs {case} {out}
//
// It computes what optax.nadam / optax.nadamw compute (the "optax" profile):
// a constant momentum coefficient mu = beta1, so the product of the mu_t is
// beta1^t, and one theta update
//     m_hat = beta1 m / (1 - beta1^(t+1)) + (1 - beta1) g / (1 - beta1^t)
//     theta -= lr m_hat / (sqrt(v / (1 - beta2^t)) + eps)
// (after theta *= 1 - lr lambda for decoupled weight decay), every operation
// in the parameter's precision: float64 as JavaScript numbers, float32 by
// rounding each result with Math.fround (exact for + - * / and sqrt, whose
// float64 result rounds to the float32 result).
//
//     node nadam.mjs [--bug adam] CASE.safetensors OUT.safetensors
//
// reads the inputs the runner writes (nadam_ref/golden/runner.py describes the
// tensors) and writes theta, m and v after every step. --bug adam injects a
// real bug: plain Adam shipped as NAdam (m_hat = m / (1 - beta1^t), no
// Nesterov look-ahead).
import { readFileSync, writeFileSync } from "node:fs";

function fail(message) {
  process.stderr.write(`nadam.mjs: ${message}\n`);
  process.exit(2);
}

// safetensors: an 8-byte little-endian header length, a JSON header, raw little-endian arrays.
function readSafetensors(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  const tensor = (name) => {
    const entry = header[name];
    if (!entry) fail(`input has no tensor ${name}`);
    const [a, b] = entry.data_offsets;
    const copy = new Uint8Array(bytes.subarray(8 + n + a, 8 + n + b)).buffer; // aligned copy
    if (entry.dtype === "F64") return new Float64Array(copy);
    if (entry.dtype === "F32") return new Float32Array(copy);
    fail(`tensor ${name} is ${entry.dtype}, neither F32 nor F64`);
  };
  return { metadata: header.__metadata__ || {}, header, tensor };
}

function writeSafetensors(path, tensors) {
  const header = {};
  let offset = 0;
  for (const [name, { array, shape }] of Object.entries(tensors)) {
    const dtype = array instanceof Float32Array ? "F32" : "F64";
    header[name] = { dtype, shape, data_offsets: [offset, offset + array.byteLength] };
    offset += array.byteLength;
  }
  let text = JSON.stringify(header);
  while ((8 + Buffer.byteLength(text)) % 8) text += " "; // arrays aligned
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  const parts = [size, Buffer.from(text, "utf8")];
  for (const { array } of Object.values(tensors)) parts.push(Buffer.from(array.buffer));
  writeFileSync(path, Buffer.concat(parts));
}

const args = process.argv.slice(2);
let adam = false;
if (args[0] === "--bug") {
  if (args[1] !== "adam") fail("--bug takes: adam");
  adam = true;
  args.splice(0, 2);
}
if (args.length !== 2) fail("usage: node nadam.mjs [--bug adam] CASE.safetensors OUT.safetensors");

const input = readSafetensors(args[0]);
const meta = input.metadata;
if (meta["case.profile"] !== "optax") fail(`this port computes the optax profile, not ${meta["case.profile"]}`);
if (!["float32", "float64"].includes(meta["case.dtype"])) fail(`real float32 or float64 only, not ${meta["case.dtype"]}`);
const single = meta["case.dtype"] === "float32";
const R = single ? Math.fround : (x) => x; // one rounding to the parameter's precision
const Arr = single ? Float32Array : Float64Array;
const closed = meta["case.loop"] !== "open";
const steps = Number(meta["case.steps"]);
const out = {};

for (let i = 0; i < Number(meta["case.parameters"]); i++) {
  const scalar = (name) => input.tensor(`${name}.${i}`)[0];
  const theta = Arr.from(input.tensor(`param.${i}`));
  const m = Arr.from(input.tensor(`exp_avg.${i}`));
  const v = Arr.from(input.tensor(`exp_avg_sq.${i}`));
  const grads = closed ? null : input.tensor(`grad.${i}`);
  const lrs = input.tensor(`lr.${i}`);
  const shape = input.header[`param.${i}`].shape;
  const n = theta.length;
  const b1 = R(scalar("beta1")), b2 = R(scalar("beta2")), eps = R(scalar("eps"));
  const omb1 = R(1 - scalar("beta1")), omb2 = R(1 - scalar("beta2"));
  const wd = scalar("weight_decay"), decoupled = scalar("decoupled_weight_decay") !== 0;
  if (scalar("maximize") !== 0) fail("optax has no maximize");
  if (wd !== 0 && !decoupled) fail("optax has only decoupled weight decay (optax.nadamw)");
  let t = scalar("step");
  let prod = R(scalar("mu_product")); // beta1^t
  const rows = { param: new Arr(steps * n), exp_avg: new Arr(steps * n), exp_avg_sq: new Arr(steps * n) };
  for (let s = 0; s < steps; s++) {
    t += 1;
    const lr = R(lrs[s]);
    prod = R(prod * b1);
    const prodNext = R(prod * b1);
    const bc2 = R(1 - R(Math.pow(b2, t)));
    const momentumWeight = R(b1 / R(1 - prodNext)), gradWeight = R(omb1 / R(1 - prod));
    const decay = decoupled ? R(1 - R(lr * wd)) : 1;
    for (let k = 0; k < n; k++) {
      let p = theta[k];
      const g = closed ? p : grads[s * n + k];
      if (decay !== 1) p = R(p * decay);
      m[k] = R(R(b1 * m[k]) + R(omb1 * g));
      v[k] = R(R(b2 * v[k]) + R(R(omb2 * g) * g));
      const denom = R(R(Math.sqrt(R(v[k] / bc2))) + eps);
      const mHat = adam
        ? R(m[k] / R(1 - prod)) // the bug: Adam's m / (1 - beta1^t)
        : R(R(momentumWeight * m[k]) + R(gradWeight * g));
      theta[k] = R(p - R(R(lr * mHat) / denom));
    }
    rows.param.set(theta, s * n);
    rows.exp_avg.set(m, s * n);
    rows.exp_avg_sq.set(v, s * n);
  }
  for (const [q, array] of Object.entries(rows)) out[`${q}.${i}`] = { array, shape: [steps, ...shape] };
}
writeSafetensors(args[1], out);
