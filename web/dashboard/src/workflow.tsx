// A workflow (its graph, its runs, a form to start one) and a run (its graph coloured live by step
// phase, a timeline, each step's input, output, error and tokens, cancel).
import { useEffect, useState } from "preact/hooks";
import { ApiError, type Item, getJson, items, nsPath, one, postJson, useFeed } from "./api";
import { Patterns, WorkflowGraph } from "./graph";
import { RunRows } from "./overview";
import { Badge, Empty, Link, ProblemState, Section, ago, duration, href, seconds, tokens } from "./ui";

const FINISHED = ["Succeeded", "Failed"];

function Field(props: { param: Item; value: any; error?: string; onChange: (value: any) => void }) {
  const p = props.param;
  const id = `input-${p.name}`;
  let control;
  if (p.enum) {
    control = (
      <select id={id} name={p.name} value={props.value ?? ""} onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}>
        <option value="">{p.required ? "choose…" : "(default)"}</option>
        {p.enum.map((v: string) => <option value={v}>{v}</option>)}
      </select>
    );
  } else if (p.type === "boolean") {
    control = <input id={id} name={p.name} type="checkbox" checked={Boolean(props.value)} onChange={(e) => props.onChange((e.target as HTMLInputElement).checked)} />;
  } else if (p.type === "integer" || p.type === "number") {
    control = <input id={id} name={p.name} type="number" step={p.type === "integer" ? 1 : "any"} value={props.value ?? ""} onInput={(e) => props.onChange((e.target as HTMLInputElement).value)} />;
  } else if (p.type === "array" || p.type === "object") {
    control = <textarea id={id} name={p.name} rows={3} placeholder={p.type === "array" ? "[…] as JSON" : "{…} as JSON"} value={props.value ?? ""} onInput={(e) => props.onChange((e.target as HTMLTextAreaElement).value)} />;
  } else {
    control = <input id={id} name={p.name} type="text" value={props.value ?? ""} placeholder={p.default != null ? String(p.default) : ""} onInput={(e) => props.onChange((e.target as HTMLInputElement).value)} />;
  }
  return (
    <label class="field" for={id}>
      <span>{p.name}{p.required ? " *" : ""} <span class="dim">{p.type ?? "string"}</span></span>
      {control}
      {p.description && <span class="dim small">{p.description}</span>}
      {props.error && <span class="field-error" data-field-error={p.name}>{props.error}</span>}
    </label>
  );
}

/** The values of the form, typed as the Workflow declares them (numbers, JSON). */
function typedInput(params: Item[], values: Record<string, any>): { input: Record<string, any>; errors: Record<string, string> } {
  const input: Record<string, any> = {};
  const errors: Record<string, string> = {};
  for (const p of params) {
    const raw = values[p.name];
    if (raw === undefined || raw === "") continue;
    if (p.type === "integer" || p.type === "number") {
      const n = Number(raw);
      if (Number.isNaN(n) || (p.type === "integer" && !Number.isInteger(n))) errors[p.name] = `not a valid ${p.type}`;
      else input[p.name] = n;
    } else if (p.type === "array" || p.type === "object") {
      try {
        input[p.name] = JSON.parse(raw);
      } catch {
        errors[p.name] = "not valid JSON";
      }
    } else {
      input[p.name] = raw;
    }
  }
  return { input, errors };
}

function StartRun(props: { ns: string; workflow: Item; allowed: boolean }) {
  const params: Item[] = props.workflow.inputs ?? [];
  const [values, setValues] = useState<Record<string, any>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  if (!props.allowed) {
    return <p class="dim" data-readonly>You may not start runs in {props.ns} (no permission to create WorkflowRuns).</p>;
  }
  const submit = async (event: Event) => {
    event.preventDefault();
    const { input, errors: local } = typedInput(params, values);
    setErrors(local);
    setMessage(null);
    if (Object.keys(local).length) return;
    setBusy(true);
    try {
      const created = await postJson<{ name: string }>(`${nsPath(props.ns)}/workflows/${encodeURIComponent(props.workflow.name)}/runs`, { input });
      location.hash = href("ns", props.ns, "runs", created.name);
    } catch (error) {
      if (error instanceof ApiError) {
        setErrors(error.fields ?? {});
        setMessage(error.message);
      } else setMessage(String(error));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="start-run" onSubmit={submit} data-form="start-run">
      {params.length === 0 && <p class="dim">This workflow takes no input.</p>}
      {params.map((p) => (
        <Field param={p} value={values[p.name]} error={errors[p.name]} onChange={(v) => setValues({ ...values, [p.name]: v })} />
      ))}
      {message && <p class="form-error" data-form-error>{message}</p>}
      <button type="submit" disabled={busy}>{busy ? "Starting…" : "Start run"}</button>
    </form>
  );
}

export function WorkflowPage(props: { ns: string; name: string; user: string }) {
  const feed = useFeed(`${nsPath(props.ns)}/workflows/${encodeURIComponent(props.name)}`);
  const workflow = one(feed, "workflow");
  const problem = feed.problems.workflow;
  if (problem) return <ProblemState problem={problem} what={`workflow ${props.name}`} namespace={props.ns} user={props.user} />;
  if (!feed.listed.has("workflow")) return <p class="dim">Loading {props.name}…</p>;
  if (!workflow) return <Empty title={`There is no workflow ${props.name} in ${props.ns}.`} />;
  const allowed = one(feed, "permissions");
  return (
    <div class="workflow-page" data-page="workflow">
      <div class="title">
        <h1>{workflow.name}</h1>
        <Badge value={workflow.accepted} label={workflow.accepted === "True" ? "Accepted" : workflow.reason || "Not accepted"} />
        <span class="dim">{workflow.steps} steps · {workflow.running} running · {workflow.pending} pending</span>
      </div>
      {workflow.description && <p>{workflow.description}</p>}
      {workflow.accepted === "False" && <div class="problem warn"><strong>{workflow.reason}</strong><p>{workflow.message}</p></div>}
      <div class="columns">
        <Section title="Graph">
          <Patterns patterns={workflow.graph.patterns ?? []} />
          <WorkflowGraph graph={workflow.graph} />
        </Section>
        <div>
          <Section title="Start a run">
            {allowed ? <StartRun ns={props.ns} workflow={workflow} allowed={allowed.createRuns} />
              : <p class="dim">Checking what you may do here…</p>}
          </Section>
          <Section title="Runs">
            <RunRows runs={items(feed, "runs")} ns={props.ns} showWorkflow={false} limit={20} />
          </Section>
        </div>
      </div>
    </div>
  );
}

// --- a run ----------------------------------------------------------------------------------------

function Timeline(props: { run: Item; selected: string | null; onSelect: (step: string) => void }) {
  const steps: Item[] = props.run.steps;
  const started = steps.map((s) => s.startedAt).filter(Boolean).map((t: string) => Date.parse(t));
  if (!started.length) return <p class="dim">No step has started yet{props.run.reason ? ` (${props.run.reason}: ${props.run.message ?? ""})` : ""}.</p>;
  const t0 = Math.min(...started);
  const ends = steps.map((s) => (s.finishedAt ? Date.parse(s.finishedAt) : s.startedAt ? Date.now() : t0));
  const span = Math.max(1000, Math.max(...ends) - t0);
  return (
    <table class="list timeline" data-table="timeline">
      <thead><tr><th>Step</th><th>Agent</th><th>Phase</th><th>Tries</th><th class="bar-cell">Time</th><th>Took</th><th>Tokens</th></tr></thead>
      <tbody>
        {steps.map((s) => {
          const start = s.startedAt ? Date.parse(s.startedAt) : null;
          const end = s.finishedAt ? Date.parse(s.finishedAt) : Date.now();
          const usage = s.usage ?? {};
          return (
            <tr data-timeline-step={s.name} data-phase={s.phase} class={props.selected === s.name ? "selected" : ""} onClick={() => props.onSelect(s.name)}>
              <td>{s.name}</td>
              <td class="dim">{s.agent ?? "–"}</td>
              <td><Badge value={s.phase} /></td>
              <td>{s.attempts ?? 0}{s.iterations ? ` · ${s.iterations} iter.` : ""}</td>
              <td class="bar-cell">
                {start !== null && (
                  <div class={`bar phase-${s.phase}`} style={{ marginLeft: `${((start - t0) / span) * 100}%`, width: `${Math.max(1, ((end - start) / span) * 100)}%` }} />
                )}
              </td>
              <td>{duration(seconds(s.startedAt, s.finishedAt))}</td>
              <td>{tokens((usage.inputTokens ?? 0) + (usage.outputTokens ?? 0))}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function StepPanel(props: { ns: string; run: string; step: string; phase: string; attempts: number }) {
  const [detail, setDetail] = useState<Item | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  useEffect(() => {
    let current = true;
    getJson<Item>(`${nsPath(props.ns)}/runs/${encodeURIComponent(props.run)}/steps/${encodeURIComponent(props.step)}`)
      .then((d) => current && (setDetail(d), setFailure(null)))
      .catch((e) => current && setFailure(e instanceof ApiError ? e.message : String(e)));
    return () => {
      current = false;
    };
  }, [props.ns, props.run, props.step, props.phase, props.attempts]);
  if (failure) return <p class="form-error">{failure}</p>;
  if (!detail || detail.name !== props.step) return <p class="dim">Loading step {props.step}…</p>;
  const input = detail.input ?? {};
  return (
    <div class="step-panel" data-step-panel={detail.name}>
      <div class="title">
        <h3>{detail.name}</h3>
        <Badge value={detail.phase} />
        <span class="dim">agent {detail.agent ?? "(routed)"} · {detail.attempts} attempt{detail.attempts === 1 ? "" : "s"}
          {detail.iterations ? ` · ${detail.iterations} iterations` : ""} · {duration(seconds(detail.startedAt, detail.finishedAt))} ·{" "}
          {tokens(detail.usage.inputTokens)} in / {tokens(detail.usage.outputTokens)} out tokens</span>
      </div>
      {detail.error && <div class="problem error" data-step-error><strong>Error</strong><pre>{detail.error}</pre></div>}
      <h4>Input</h4>
      {input.text != null ? <pre data-step-input>{input.text}</pre>
        : <><pre class="dim">{input.template ?? "(the previous step's output)"}</pre>{input.note && <p class="dim">{input.note}</p>}{input.error && <p class="form-error">{input.error}</p>}</>}
      <h4>Output</h4>
      {detail.note && <p class="dim">{detail.note}</p>}
      {detail.output != null ? <pre data-step-output>{detail.output}</pre> : <p class="dim">No output yet.</p>}
    </div>
  );
}

export function RunPage(props: { ns: string; name: string; user: string }) {
  const feed = useFeed(`${nsPath(props.ns)}/runs/${encodeURIComponent(props.name)}`);
  const [selected, setSelected] = useState<string | null>(null);
  const [cancelError, setCancelError] = useState<string | null>(null);
  const run = one(feed, "run");
  const workflow = one(feed, "workflow");
  if (feed.problems.run) return <ProblemState problem={feed.problems.run} what={`run ${props.name}`} namespace={props.ns} user={props.user} />;
  if (!feed.listed.has("run")) return <p class="dim">Loading run {props.name}…</p>;
  if (!run) return <Empty title={`There is no run ${props.name} in ${props.ns}.`}>It may have been deleted (finished runs can have a TTL).</Empty>;
  const allowed = one(feed, "permissions");
  const steps: Record<string, Item> = Object.fromEntries((run.steps as Item[]).map((s) => [s.name, s]));
  const failed = (run.steps as Item[]).find((s) => s.phase === "Failed");
  const focus = selected ?? (failed ? failed.name : null);
  const finished = FINISHED.includes(run.phase);
  const cancel = async () => {
    setCancelError(null);
    try {
      await postJson(`${nsPath(props.ns)}/runs/${encodeURIComponent(run.name)}/cancel`, {});
    } catch (error) {
      setCancelError(error instanceof ApiError ? error.message : String(error));
    }
  };
  const usage = run.usage ?? {};
  return (
    <div class="run-page" data-page="run" data-run-phase={run.phase}>
      <div class="title">
        <h1>{run.name}</h1>
        <Badge value={run.phase} />
        {run.reason && run.reason !== run.phase && <span class={run.phase === "Failed" ? "reason" : "dim"} data-run-reason>{run.reason}</span>}
        <span class="dim">
          of <Link to={href("ns", props.ns, "workflows", run.workflow)}>{run.workflow}</Link> · started {ago(run.startedAt || run.created)} ·{" "}
          {run.duration ?? "–"} · {tokens((usage.inputTokens ?? 0) + (usage.outputTokens ?? 0))} tokens
        </span>
        {!finished && (allowed?.cancelRuns ?? false) && (
          <button class="danger" onClick={cancel} disabled={run.cancelRequested} data-action="cancel">
            {run.cancelRequested ? "Cancelling…" : "Cancel run"}
          </button>
        )}
      </div>
      {run.message && run.phase !== "Succeeded" && <p class={run.phase === "Failed" ? "form-error" : "dim"} data-run-message>{run.message}</p>}
      {cancelError && <p class="form-error">{cancelError}</p>}
      <div class="columns">
        <Section title="Graph">
          {workflow ? <WorkflowGraph graph={workflow.graph} steps={steps} selected={focus} onSelect={setSelected} />
            : feed.problems.workflow ? <p class="dim">The workflow cannot be read: {feed.problems.workflow.message}</p>
            : <p class="dim">Loading the workflow…</p>}
          <p class="legend dim">
            {["Pending", "Running", "Succeeded", "Failed", "Skipped"].map((p) => <Badge value={p} />)} — click a step for its input and output.
          </p>
        </Section>
        <Section title="Timeline">
          <Timeline run={run} selected={focus} onSelect={setSelected} />
        </Section>
      </div>
      {focus ? (
        <Section title="Step" id="step">
          <StepPanel ns={props.ns} run={run.name} step={focus} phase={steps[focus]?.phase ?? "Pending"} attempts={steps[focus]?.attempts ?? 0} />
        </Section>
      ) : null}
      <Section title="Input and output">
        <h4>Input</h4>
        <pre data-run-input>{JSON.stringify(run.input, null, 2)}</pre>
        <h4>Output</h4>
        {run.output ? Object.entries(run.output as Item).map(([key, value]) => (
          <div data-run-output={key}><strong>{key}</strong><pre>{typeof value === "string" ? value : JSON.stringify(value, null, 2)}</pre></div>
        )) : <p class="dim">{finished ? "No output." : "Not finished yet."}</p>}
      </Section>
    </div>
  );
}
