// node --test tests/widgets/js/ : the browser's divergence math against reference values computed
// by madopd.divergence (float64, torch autograd) -- tests/widgets/snapshots/playground_reference.json,
// kept fresh by tests/widgets/test_playground.py::test_reference_snapshot_is_current.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dense, confidenceWeights, effectiveTeachers } from "../../../widgets/divmath.js";

const ref = JSON.parse(readFileSync(new URL("../snapshots/playground_reference.json", import.meta.url), "utf8"));

test("values and logit gradients match madopd.divergence to 1e-6", () => {
  assert.ok(ref.length >= 3);
  for (const c of ref) {
    const r = dense(c.teacher_logits, c.student_logits, c.temperature, c.beta);
    for (const kind of ["fkl", "rkl", "jsd", "njsd"]) {
      assert.ok(Math.abs(r.values[kind] - c.values[kind]) < 1e-6, `${kind} value`);
      c.grads[kind].forEach((g, i) => assert.ok(Math.abs(r.grads[kind][i] - g) < 1e-6, `${kind} grad ${i}`));
    }
  }
});

test("confidence weights: softmax(c/100/tau) and the missing-tag policies", () => {
  const w = confidenceWeights([80, 20], 1.0);
  assert.ok(Math.abs(w[0] - 1 / (1 + Math.exp(-0.6))) < 1e-12);
  assert.deepEqual(confidenceWeights([80, null], 1.0, "uniform"), [0.5, 0.5]);
  assert.deepEqual(confidenceWeights([80, null], 1.0, "drop_teacher"), [1, 0]);
  assert.equal(confidenceWeights([80, null], 1.0, "skip_sample"), null);
  assert.ok(Math.abs(effectiveTeachers([0.5, 0.5]) - 2) < 1e-12);
});
