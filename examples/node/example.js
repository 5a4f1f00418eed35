// @ts-check
/**
 * A PerfectQueue producer and worker in Node.js, over a client generated from the service's
 * OpenAPI document (openapi/openapi.json) by openapi-typescript, and called with openapi-fetch.
 *
 *   node example.js [BASE_URL] [QUEUE] [COUNT]
 *
 * (or the environment variables PQ_URL, PQ_QUEUE and PQ_COUNT; the defaults are
 * http://127.0.0.1:8000, "default" and 5). It
 *   1. submits COUNT tasks: the first with /submit, the rest in one /submit-batch;
 *   2. submits the first id once more, to show the 409 problem the service answers with;
 *   3. runs a worker loop: long-polls for tasks, "processes" each one (with a heartbeat that
 *      stores its progress), and finishes it, until every task it submitted is done;
 *   4. reads each task back and exits 0 only if every one of them is finished.
 *
 * The worker takes whatever the queue hands out, so point it at a queue of its own.
 * Task ids are unique to each run, so the example can be run again on the same queue.
 */
import { randomUUID } from "node:crypto";
import createClient from "openapi-fetch";

/** @typedef {import("./schema.js").paths} Paths */
/** @typedef {import("./schema.js").components["schemas"]} Schemas */
/** @typedef {Schemas["SubmitRequest"]} SubmitRequest */
/** @typedef {Schemas["AcquiredTaskOut"]} AcquiredTask */
/** @typedef {Schemas["Problem"]} Problem */

const baseUrl = process.argv[2] ?? process.env.PQ_URL ?? "http://127.0.0.1:8000";
const queue = process.argv[3] ?? process.env.PQ_QUEUE ?? "default";
const count = Number(process.argv[4] ?? process.env.PQ_COUNT ?? 5);
/** How long the worker keeps polling for the tasks it submitted before it gives up. */
const WORK_DEADLINE_MS = 60_000;

/** @type {import("openapi-fetch").Client<Paths>} */
const client = createClient({ baseUrl });
/** The path parameters every queue operation takes. */
const params = { path: { queue } };

/**
 * An unexpected answer: stop with the status and the problem's code and detail.
 * Every error the service gives is an RFC 9457 problem (application/problem+json).
 * @param {string} what
 * @param {Response} response
 * @param {Problem | undefined} problem
 * @returns {never}
 */
function fail(what, response, problem) {
  const why = problem ? `${problem.code}: ${problem.detail}` : "(no problem body)";
  throw new Error(`${what} answered HTTP ${response.status} ${why}`);
}

// -- producer -------------------------------------------------------------------------------

/**
 * Submit `ids` as tasks of type "resize_image": one with /submit, the rest with /submit-batch.
 * @param {string[]} ids
 */
async function produce(ids) {
  /** @type {SubmitRequest[]} */
  const tasks = ids.map((id, i) => ({ id, type: "resize_image", data: { image: `img-${i}.png`, width: 64 } }));
  const [first, ...rest] = tasks;

  // One task: 201 {id}.
  const one = await client.POST("/v1/queues/{queue}/submit", { params, body: first });
  if (one.error || one.response.status !== 201) fail("submit", one.response, one.error);
  console.log(`submitted ${one.data?.id}`);

  // Many tasks in one request: 200 with a result per task (a duplicate id fails alone).
  if (rest.length > 0) {
    const batch = await client.POST("/v1/queues/{queue}/submit-batch", { params, body: { tasks: rest } });
    if (batch.error) fail("submit-batch", batch.response, batch.error);
    for (const failure of batch.data.failed) {
      throw new Error(`submit-batch refused ${failure.id}: ${failure.code} ${failure.detail}`);
    }
    console.log(`submitted ${batch.data.successful.map((s) => s.id).join(", ")}`);
  }

  // A task id can be submitted only once, so a producer may safely retry a submit: a retry that
  // meets its own earlier success gets 409 with the code "already_exists".
  const again = await client.POST("/v1/queues/{queue}/submit", { params, body: first });
  if (again.response.status !== 409 || again.error?.code !== "already_exists") {
    fail("duplicate submit (409 already_exists expected)", again.response, again.error);
  }
  console.log(`submitting ${first.id} again: HTTP 409, code ${again.error.code}`);
}

// -- worker ---------------------------------------------------------------------------------

/**
 * Do the work of one task, telling the service how far it got; a long task heartbeats more
 * often than its lease's alive_time, or the task is delivered to another worker.
 * @param {AcquiredTask} task
 */
async function processTask(task) {
  const thumbnail = `thumb-${task.data.image}`; // the "work"
  const beat = await client.POST("/v1/queues/{queue}/heartbeat", {
    params,
    body: { id: task.id, lease: task.lease, alive_time: 60, data: { ...task.data, thumbnail } },
  });
  // 409 "preempted" would mean the lease expired and another worker holds the task now:
  // this worker must then drop the task without finishing it.
  if (beat.error || beat.response.status !== 204) fail(`heartbeat ${task.id}`, beat.response, beat.error);
}

/**
 * Poll, process and finish tasks until every id in `ids` is finished or the deadline passes.
 * @param {string[]} ids
 */
async function work(ids) {
  const pending = new Set(ids);
  const deadline = Date.now() + WORK_DEADLINE_MS;
  while (pending.size > 0) {
    if (Date.now() > deadline) throw new Error(`tasks still not done: ${[...pending].join(", ")}`);
    // A long-poll: up to 10 tasks, leased for 60 s; when none is waiting the service holds the
    // request up to `wait` seconds and answers as soon as one is submitted (or with no tasks).
    const poll = await client.POST("/v1/queues/{queue}/poll", {
      params,
      body: { max: 10, alive_time: 60, wait: 2 },
    });
    if (poll.error) fail("poll", poll.response, poll.error);
    for (const task of poll.data.tasks) {
      console.log(`working on ${task.id} (${task.type}, lease ${task.lease})`);
      await processTask(task);
      const done = await client.POST("/v1/queues/{queue}/finish", {
        params,
        body: { id: task.id, lease: task.lease },
      });
      if (done.error || done.response.status !== 204) fail(`finish ${task.id}`, done.response, done.error);
      pending.delete(task.id);
    }
  }
}

// -- check ----------------------------------------------------------------------------------

/**
 * Read every task back; true if each one is finished.
 * @param {string[]} ids
 */
async function allFinished(ids) {
  let ok = true;
  for (const id of ids) {
    const got = await client.GET("/v1/queues/{queue}/tasks/{task_id}", {
      params: { path: { queue, task_id: id } },
    });
    if (got.error) fail(`get ${id}`, got.response, got.error);
    console.log(`${id}: ${got.data.status}`);
    ok &&= got.data.status === "finished";
  }
  return ok;
}

async function main() {
  if (!Number.isInteger(count) || count < 1) throw new Error(`COUNT must be a positive integer, not ${count}`);
  const run = randomUUID().slice(0, 8);
  const ids = Array.from({ length: count }, (_, i) => `node-${run}-${i}`);
  await produce(ids);
  await work(ids);
  const ok = await allFinished(ids);
  console.log(ok ? `all ${count} tasks finished` : "some tasks are not finished");
  return ok;
}

main().then(
  (ok) => {
    process.exitCode = ok ? 0 : 1;
  },
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
