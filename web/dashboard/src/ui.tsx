// Small shared pieces: links, badges, times, empty and problem states.
import type { ComponentChildren } from "preact";
import type { Problem } from "./api";

export const href = (...parts: string[]) => "#/" + parts.map(encodeURIComponent).join("/");

export function Link(props: { to: string; children: ComponentChildren; class?: string }) {
  return <a href={props.to} class={props.class}>{props.children}</a>;
}

const PHASE_CLASS: Record<string, string> = {
  Succeeded: "ok", True: "ok", Ready: "ok", Active: "ok", Present: "ok",
  Running: "run", Progressing: "run",
  Failed: "bad", False: "bad",
  Pending: "wait", Unknown: "wait",
  Skipped: "skip",
};

export function Badge(props: { value: string; label?: string; title?: string }) {
  return (
    <span class={`badge ${PHASE_CLASS[props.value] ?? "wait"}`} title={props.title} data-state={props.value}>
      {props.label ?? props.value}
    </span>
  );
}

export function ago(timestamp?: string | null): string {
  if (!timestamp) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function seconds(from?: string | null, to?: string | null): number | null {
  if (!from) return null;
  const end = to ? Date.parse(to) : Date.now();
  return Math.max(0, (end - Date.parse(from)) / 1000);
}

export function duration(value: number | null): string {
  if (value === null) return "–";
  if (value < 10) return `${value.toFixed(1)}s`;
  if (value < 120) return `${Math.round(value)}s`;
  if (value < 7200) return `${Math.round(value / 60)}m`;
  return `${Math.round(value / 3600)}h`;
}

export function Empty(props: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty" data-empty>
      <strong>{props.title}</strong>
      {props.children && <div class="hint">{props.children}</div>}
    </div>
  );
}

/** The page cannot show this: the viewer may not read it, or the API server cannot be reached. */
export function ProblemState(props: { problem: Problem; what: string; namespace: string; user?: string }) {
  if (props.problem.op === "forbidden") {
    return (
      <div class="problem forbidden" data-forbidden>
        <h2>No permission</h2>
        <p>
          Your Kubernetes identity{props.user ? <> (<code>{props.user}</code>)</> : null} may not read{" "}
          {props.what} in namespace <code>{props.namespace}</code>, so the dashboard shows nothing here and
          offers no actions.
        </p>
        <p class="hint">
          Ask a cluster administrator for a Role in <code>{props.namespace}</code> granting{" "}
          <code>get</code>, <code>list</code> and <code>watch</code> on <code>agents</code>,{" "}
          <code>workflows</code> and <code>workflowruns</code> (API group <code>kagent.dev</code>), or pick
          another namespace.
        </p>
        <details>
          <summary>What the API server said</summary>
          <code>{props.problem.message}</code>
        </details>
      </div>
    );
  }
  return (
    <div class="problem error" data-error>
      <h2>Cannot read {props.what} right now</h2>
      <p>{props.problem.message}</p>
      <p class="hint">The dashboard keeps trying; check that the cluster is up.</p>
    </div>
  );
}

export function Section(props: { title: string; extra?: ComponentChildren; children: ComponentChildren; id?: string }) {
  return (
    <section class="card" id={props.id}>
      <header>
        <h2>{props.title}</h2>
        {props.extra}
      </header>
      {props.children}
    </section>
  );
}

export function tokens(value?: number | null): string {
  if (!value) return "–";
  if (value < 10000) return String(value);
  if (value < 1e6) return `${(value / 1000).toFixed(1)}k`;
  return `${(value / 1e6).toFixed(2)}M`;
}
