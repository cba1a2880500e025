// One agent: its state and why, what it owns, its Events and spec, and a chat panel.
import { useRef, useState } from "preact/hooks";
import { ApiError, type ChatEvent, type FeedState, type Item, chatTurn, items, nsPath, one, useFeed } from "./api";
import { Badge, Empty, ProblemState, Section, ago, tokens } from "./ui";

interface Turn {
  role: "user" | "agent";
  text: string;
  tools: Item[];
  question?: boolean;
  error?: string;
  usage?: Item;
  streaming?: boolean;
}

function Chat(props: { ns: string; agent: string; ready: boolean; allowed: boolean }) {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [draft, setDraft] = useState("");
  const [busy, setBusy] = useState(false);
  const conversation = useRef<{ contextId?: string; taskId?: string; waiting?: boolean }>({});
  const list = useRef<HTMLDivElement>(null);

  const update = (change: (turn: Turn) => void) =>
    setTurns((all) => {
      const copy = all.slice();
      const last = { ...copy[copy.length - 1], tools: copy[copy.length - 1].tools.slice() };
      change(last);
      copy[copy.length - 1] = last;
      return copy;
    });

  const onEvent = (event: ChatEvent) => {
    if (event.type === "task") {
      conversation.current.contextId = event.contextId;
      conversation.current.taskId = event.taskId;
    } else if (event.type === "text") {
      update((t) => (t.text = event.replace ? event.text : t.text + event.text));
    } else if (event.type === "tool") {
      update((t) => {
        const known = t.tools.findIndex((x) => x.id && x.id === event.id);
        if (known >= 0) t.tools[known] = { ...t.tools[known], ...event };
        else t.tools.push(event);
      });
    } else if (event.type === "question") {
      conversation.current.waiting = true;
      update((t) => {
        t.text = event.text;
        t.question = true;
      });
    } else if (event.type === "done") {
      conversation.current.waiting = false;
      update((t) => {
        if (event.text) t.text = event.text;
        t.usage = event.usage;
      });
    } else if (event.type === "error") {
      conversation.current.waiting = false;
      update((t) => (t.error = event.message));
    }
    requestAnimationFrame(() => list.current?.scrollTo({ top: list.current.scrollHeight }));
  };

  const send = async (event: Event) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || busy) return;
    const answering = conversation.current.waiting;
    setDraft("");
    setBusy(true);
    setTurns((all) => [...all, { role: "user", text, tools: [] }, { role: "agent", text: "", tools: [], streaming: true }]);
    try {
      await chatTurn(props.ns, props.agent, {
        message: text,
        contextId: conversation.current.contextId,
        taskId: answering ? conversation.current.taskId : undefined,
      }, onEvent);
    } catch (error) {
      update((t) => (t.error = error instanceof ApiError ? error.message : String(error)));
    } finally {
      update((t) => (t.streaming = false));
      setBusy(false);
    }
  };

  const waiting = conversation.current.waiting;
  return (
    <div class="chat" data-chat>
      <div class="turns" ref={list}>
        {!turns.length && (
          <p class="dim">
            {props.allowed ? `Say something to ${props.agent}. The conversation keeps its memory until you leave the page.`
              : `You may not talk to ${props.agent}: your Kubernetes user lacks the 'invoke' verb on agents.kagent.dev here.`}
          </p>
        )}
        {turns.map((turn) => (
          <div class={`turn ${turn.role} ${turn.question ? "question" : ""}`} data-turn={turn.role}
            data-streaming={turn.streaming ? "true" : undefined} data-question={turn.question ? "true" : undefined}>
            {turn.tools.map((tool) => (
              <div class="tool" data-tool={tool.name}>
                ⚙ {tool.name}({tool.arguments ? JSON.stringify(tool.arguments).slice(0, 120) : ""})
                {tool.phase === "result" ? ` → ${tool.outcome ?? "done"}` : " …"}
              </div>
            ))}
            {turn.question && <div class="asks">The agent asks you:</div>}
            <div class="text">{turn.text || (turn.streaming && !turn.error ? "…" : "")}</div>
            {turn.error && <div class="chat-error" data-chat-error>{turn.error}</div>}
            {turn.usage && (turn.usage.inputTokens || turn.usage.outputTokens) ? (
              <div class="dim small">{tokens((turn.usage.inputTokens ?? 0) + (turn.usage.outputTokens ?? 0))} tokens</div>
            ) : null}
          </div>
        ))}
      </div>
      <form onSubmit={send} class="composer">
        <input
          name="message"
          value={draft}
          onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
          placeholder={waiting ? "Answer the agent's question…" : props.ready ? `Message ${props.agent}` : `${props.agent} is not Ready yet`}
          disabled={!props.allowed || busy}
          autocomplete="off"
        />
        <button type="submit" disabled={!props.allowed || busy || !draft.trim()}>{waiting ? "Answer" : "Send"}</button>
      </form>
    </div>
  );
}

function childRows(feed: FeedState): Item[] {
  return Object.keys(feed.data)
    .filter((c) => c.startsWith("children:"))
    .flatMap((c) => items(feed, c))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function advice(agent: Item): string | null {
  const reason: string = agent.reason ?? "";
  if (agent.ready === "True") return null;
  if (/Tool|Memory|Secret|Reference|NotFound|Missing/i.test(reason))
    return "Create what it references (see the message), or fix the name in the Agent's spec.";
  if (/Rollout|Progress|Unavailable|Pending/i.test(reason))
    return "Its pods are not available yet: look at the Pod rows and the Events below.";
  return "See the conditions and Events below.";
}

export function AgentPage(props: { ns: string; name: string; user: string }) {
  const feed = useFeed(`${nsPath(props.ns)}/agents/${encodeURIComponent(props.name)}`);
  const agent = one(feed, "agent");
  const problem = feed.problems.agent;
  if (problem) return <ProblemState problem={problem} what={`agent ${props.name}`} namespace={props.ns} user={props.user} />;
  if (!feed.listed.has("agent")) return <p class="dim">Loading {props.name}…</p>;
  if (!agent) {
    return <Empty title={`There is no agent ${props.name} in ${props.ns}.`}>It may have been deleted. <a href={`#/ns/${props.ns}`}>Back to the overview</a>.</Empty>;
  }
  const allowed = one(feed, "permissions");
  const metrics = one(feed, "metrics");
  const events = items(feed, "events").sort((a, b) => (b.last ?? "").localeCompare(a.last ?? ""));
  const children = childRows(feed);
  const hint = advice(agent);
  return (
    <div class="agent-page" data-page="agent">
      <div class="title">
        <h1>{agent.displayName || agent.name}</h1>
        <Badge value={agent.ready} label={agent.ready === "True" ? "Ready" : "Not Ready"} />
        <span class="dim">{agent.model} · {agent.readyReplicas}/{agent.replicas} replicas</span>
      </div>
      {agent.description && <p>{agent.description}</p>}
      {agent.ready !== "True" && (
        <div class="problem warn" data-not-ready>
          <strong>Not Ready{agent.reason ? `: ${agent.reason}` : ""}</strong>
          {agent.message && <p>{agent.message}</p>}
          {hint && <p class="hint">{hint}</p>}
        </div>
      )}
      <div class="columns">
        <div>
          <Section title="Chat">
            <Chat ns={props.ns} agent={props.name} ready={agent.ready === "True"} allowed={allowed ? allowed.invokeAgents : true} />
          </Section>
          {metrics && (
            <Section title="Load">
              <p class="figures">
                <span>{metrics.requests} requests</span>
                <span>{metrics.rps != null ? `${metrics.rps.toFixed(2)} req/s` : "– req/s"}</span>
                <span>{metrics.errorRate != null ? `${(metrics.errorRate * 100).toFixed(1)}% errors` : "no errors"}</span>
                <span>p99 {metrics.p99 != null ? `${Math.round(metrics.p99 * 1000)} ms` : "–"}</span>
                <span>{tokens(metrics.tokens)} tokens</span>
              </p>
            </Section>
          )}
        </div>
        <div>
          <Section title="Conditions">
            <table class="list" data-table="conditions">
              <thead><tr><th>Type</th><th>Status</th><th>Reason</th><th>Message</th><th>Since</th></tr></thead>
              <tbody>
                {agent.conditions.map((c: Item) => (
                  <tr data-condition={c.type}><td>{c.type}</td><td><Badge value={c.status} /></td><td>{c.reason}</td><td>{c.message}</td><td class="dim">{ago(c.lastTransitionTime)}</td></tr>
                ))}
              </tbody>
            </table>
          </Section>
          <Section title="What it owns">
            {children.length ? (
              <table class="list" data-table="children">
                <thead><tr><th>Object</th><th>State</th><th>Detail</th></tr></thead>
                <tbody>
                  {children.map((c) => (
                    <tr data-child={c.name}><td>{c.name}</td><td><Badge value={c.state} /></td><td class="dim">{c.detail}</td></tr>
                  ))}
                </tbody>
              </table>
            ) : <Empty title="Nothing yet.">The controller creates a Deployment, Service, ConfigMap and ServiceAccount once the Agent is Accepted.</Empty>}
          </Section>
          <Section title="Events">
            {events.length ? (
              <table class="list" data-table="events">
                <thead><tr><th>Type</th><th>Reason</th><th>Object</th><th>Message</th><th>Last</th></tr></thead>
                <tbody>
                  {events.slice(0, 50).map((e) => (
                    <tr data-event={e.reason}><td><Badge value={e.type === "Warning" ? "Failed" : "Succeeded"} label={e.type} /></td><td>{e.reason}</td><td class="dim">{e.object}</td><td>{e.message}{e.count > 1 ? ` (×${e.count})` : ""}</td><td class="dim">{ago(e.last)}</td></tr>
                  ))}
                </tbody>
              </table>
            ) : feed.problems.events ? <p class="dim">Events: {feed.problems.events.message}</p> : <Empty title="No recent Events." />}
          </Section>
          <Section title="Spec">
            <pre class="spec">{JSON.stringify(agent.spec, null, 2)}</pre>
          </Section>
        </div>
      </div>
    </div>
  );
}
