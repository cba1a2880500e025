// The namespace at a glance: agents with their health and load, workflows, recent runs.
import { useState } from "preact/hooks";
import { type FeedState, type Item, items, nsPath, one, useFeed } from "./api";
import { Badge, Empty, Link, ProblemState, Section, ago, href, tokens } from "./ui";

const RUNS_PAGE = 50;
const PHASES = ["Running", "Pending", "Succeeded", "Failed"];

function percent(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  return `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
}

function latency(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
}

function AgentRows(props: { feed: FeedState; ns: string }) {
  const agents = items(props.feed, "agents").sort((a, b) => a.name.localeCompare(b.name));
  const metrics = props.feed.data.metrics;
  if (!agents.length) {
    return (
      <Empty title={`No agents in ${props.ns} yet.`}>
        Apply one with <code>kubectl apply -n {props.ns} -f examples/customer-support/agent.yaml</code>, or run{" "}
        <code>make demo</code> for a namespace full of them.
      </Empty>
    );
  }
  const notReady = agents.filter((a) => a.ready !== "True").length;
  return (
    <>
      {notReady > 0 && <p class="attention">{notReady} of {agents.length} agents not Ready — the reason is in each row.</p>}
      <table class="list" data-table="agents">
        <thead>
          <tr>
            <th>Agent</th><th>Model</th><th>Ready</th><th title="ready / desired pods">Replicas</th>
            <th title="requests per second, over the last few seconds">Req/s</th>
            <th title="share of requests that failed, since the pods started">Errors</th>
            <th title="99th percentile of request time, since the pods started">p99</th>
            <th title="model tokens, input + output, since the pods started">Tokens</th>
          </tr>
        </thead>
        <tbody>
          {agents.map((agent) => {
            const m: Item | undefined = metrics?.get(agent.name);
            return (
              <tr data-agent={agent.name} data-ready={agent.ready}>
                <td><Link to={href("ns", props.ns, "agents", agent.name)}>{agent.name}</Link>
                  {agent.description && <div class="dim">{agent.description}</div>}</td>
                <td class="dim">{agent.model}</td>
                <td>
                  <Badge value={agent.ready} label={agent.ready === "True" ? "Ready" : "Not Ready"} />
                  {agent.ready !== "True" && agent.reason && (
                    <div class="why" data-why>{agent.reason}{agent.message ? `: ${agent.message}` : ""}</div>
                  )}
                </td>
                <td>{agent.readyReplicas ?? 0}/{agent.replicas ?? 0}</td>
                <td data-metric="rps">{m?.rps != null ? m.rps.toFixed(2) : "–"}</td>
                <td data-metric="errors">{percent(m?.errorRate)}</td>
                <td data-metric="p99">{latency(m?.p99)}</td>
                <td data-metric="tokens">{tokens(m?.tokens)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

function WorkflowRows(props: { feed: FeedState; ns: string }) {
  const workflows = items(props.feed, "workflows").sort((a, b) => a.name.localeCompare(b.name));
  if (!workflows.length) {
    return (
      <Empty title="No workflows yet.">
        Apply one with <code>kubectl apply -n {props.ns} -f examples/research-report/workflow.yaml</code>.
      </Empty>
    );
  }
  return (
    <table class="list" data-table="workflows">
      <thead><tr><th>Workflow</th><th>Steps</th><th>Accepted</th><th>Running</th><th>Pending</th></tr></thead>
      <tbody>
        {workflows.map((wf) => (
          <tr data-workflow={wf.name}>
            <td><Link to={href("ns", props.ns, "workflows", wf.name)}>{wf.name}</Link>
              {wf.description && <div class="dim">{wf.description}</div>}</td>
            <td>{wf.steps}</td>
            <td><Badge value={wf.accepted} label={wf.accepted === "True" ? "Accepted" : wf.reason || wf.accepted} title={wf.message} /></td>
            <td>{wf.running}</td>
            <td>{wf.pending}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function RunRows(props: { runs: Item[]; ns: string; showWorkflow?: boolean; limit?: number }) {
  const [shown, setShown] = useState(props.limit ?? RUNS_PAGE);
  const runs = props.runs.slice().sort((a, b) => (b.created ?? "").localeCompare(a.created ?? "") || b.name.localeCompare(a.name));
  if (!runs.length) return <Empty title="No runs yet.">Start one from a workflow's page.</Empty>;
  return (
    <>
      <table class="list" data-table="runs">
        <thead><tr><th>Run</th>{props.showWorkflow !== false && <th>Workflow</th>}<th>Phase</th><th>Started</th><th>Duration</th><th>Tokens</th></tr></thead>
        <tbody>
          {runs.slice(0, shown).map((run) => (
            <tr data-run={run.name} data-phase={run.phase}>
              <td><Link to={href("ns", props.ns, "runs", run.name)}>{run.name}</Link></td>
              {props.showWorkflow !== false && <td class="dim">{run.workflow}</td>}
              <td><Badge value={run.phase} />{run.reason && run.phase !== "Succeeded" && <span class="dim"> {run.reason}</span>}</td>
              <td class="dim">{ago(run.startedAt || run.created)}</td>
              <td>{run.duration ?? "–"}</td>
              <td>{tokens(run.tokens)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {runs.length > shown && (
        <button class="more" onClick={() => setShown(shown + RUNS_PAGE)}>
          Show {Math.min(RUNS_PAGE, runs.length - shown)} more of {runs.length - shown}
        </button>
      )}
    </>
  );
}

function PhaseCounts(props: { runs: Item[] }) {
  const counts: Record<string, number> = {};
  for (const run of props.runs) counts[run.phase] = (counts[run.phase] ?? 0) + 1;
  return (
    <span class="counts" data-counts>
      {props.runs.length} {props.runs.length === 1 ? "run" : "runs"}{PHASES.filter((p) => counts[p]).map((p) => <> · <Badge value={p} label={`${counts[p]} ${p}`} /></>)}
    </span>
  );
}

export function Overview(props: { ns: string; user: string }) {
  const feed = useFeed(`${nsPath(props.ns)}/overview`);
  const forbidden = feed.problems.agents?.op === "forbidden" ? feed.problems.agents : null;
  if (forbidden) return <ProblemState problem={forbidden} what="agents" namespace={props.ns} user={props.user} />;
  const loading = !feed.listed.has("agents");
  const runs = items(feed, "runs");
  const allowed = one(feed, "permissions");
  return (
    <div class="overview" data-page="overview" data-loaded={!loading}>
      {feed.problems.agents && <ProblemState problem={feed.problems.agents} what="agents" namespace={props.ns} />}
      <Section title="Agents" extra={<span class="dim">{loading ? "loading…" : `${feed.data.agents?.size ?? 0} agents`}</span>}>
        {loading ? <p class="dim">Listing agents…</p> : <AgentRows feed={feed} ns={props.ns} />}
      </Section>
      <Section title="Workflows">
        {feed.problems.workflows ? <ProblemState problem={feed.problems.workflows} what="workflows" namespace={props.ns} />
          : feed.listed.has("workflows") ? <WorkflowRows feed={feed} ns={props.ns} /> : <p class="dim">Listing workflows…</p>}
      </Section>
      <Section title="Recent runs" extra={<PhaseCounts runs={runs} />}>
        {feed.problems.runs ? <ProblemState problem={feed.problems.runs} what="workflow runs" namespace={props.ns} />
          : feed.listed.has("runs") ? <RunRows runs={runs} ns={props.ns} /> : <p class="dim">Listing runs…</p>}
      </Section>
      {allowed && !allowed.createRuns && (
        <p class="dim" data-readonly>You may look but not start runs in {props.ns}.</p>
      )}
    </div>
  );
}
