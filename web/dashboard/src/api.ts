// Talking to the dashboard's server: the session, live feeds (Server-Sent Events from Kubernetes
// watches, through the browser's EventSource), JSON actions, and streamed chat turns (a POST whose
// answer is an event stream, read with eventsource-parser).
import { createParser } from "eventsource-parser";
import { useEffect, useState } from "preact/hooks";

export type Item = Record<string, any>;

export interface Session {
  user: string;
  mode: "kubeconfig" | "token";
  defaultNamespace: string;
  namespaces: string[] | null;
  agentsVia: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    public status: number,
    public fields?: Record<string, string>,
    public forbidden = false,
  ) {
    super(message);
  }
}

async function failure(response: Response): Promise<ApiError> {
  let body: any = {};
  try {
    body = await response.json();
  } catch {
    body = { error: response.statusText };
  }
  return new ApiError(body.error || response.statusText, response.status, body.fields || undefined,
    Boolean(body.forbidden) || response.status === 403);
}

export async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export async function postJson<T>(url: string, body: unknown): Promise<T> {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export const nsPath = (ns: string) => `/api/namespaces/${encodeURIComponent(ns)}`;

// --- live feeds -------------------------------------------------------------------------------

export interface Problem {
  op: "forbidden" | "error";
  message: string;
}

export interface FeedState {
  /** collection → name → item */
  data: Record<string, Map<string, Item>>;
  /** collections listed at least once */
  listed: Set<string>;
  problems: Record<string, Problem>;
  connected: boolean;
  /** bumps on every applied batch, so components re-render */
  version: number;
}

function emptyFeed(): FeedState {
  return { data: {}, listed: new Set(), problems: {}, connected: false, version: 0 };
}

/** Apply one batch of changes from the server to the feed's state (in place). */
export function applyOps(state: FeedState, ops: Item[]): void {
  for (const op of ops) {
    const collection: string = op.collection;
    if (op.op === "reset") {
      state.data[collection] = new Map(op.items.map((item: Item) => [item.name, item]));
      state.listed.add(collection);
      delete state.problems[collection];
    } else if (op.op === "upsert") {
      (state.data[collection] ??= new Map()).set(op.item.name, op.item);
      delete state.problems[collection];
    } else if (op.op === "delete") {
      state.data[collection]?.delete(op.name);
    } else if (op.op === "forbidden" || op.op === "error") {
      state.problems[collection] = { op: op.op, message: op.message };
      if (op.op === "forbidden") state.listed.add(collection);
    }
  }
}

/** Follow a live page: the server lists and watches, then sends batches of changes. */
export function useFeed(url: string | null): FeedState {
  const [state, setState] = useState<FeedState>(emptyFeed);
  useEffect(() => {
    if (!url) return;
    const live = emptyFeed();
    setState({ ...live });
    const source = new EventSource(url);
    let frame = 0;
    const render = () => {
      frame = 0;
      live.version += 1;
      setState({ ...live });
    };
    const schedule = () => {
      if (!frame) frame = requestAnimationFrame(render);
    };
    source.addEventListener("changes", (event) => {
      applyOps(live, JSON.parse((event as MessageEvent).data).ops);
      live.connected = true;
      schedule();
    });
    source.onopen = () => {
      live.connected = true;
      schedule();
    };
    source.onerror = () => {
      live.connected = false;
      schedule();
      // Signed out (or the server restarted and forgot the session): the page asks again.
      fetch("/api/session", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) window.dispatchEvent(new Event("kagent:signed-out"));
      }).catch(() => undefined);
    };
    return () => {
      source.close();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [url]);
  return state;
}

export function items(state: FeedState, collection: string): Item[] {
  return Array.from(state.data[collection]?.values() ?? []);
}

export function one(state: FeedState, collection: string): Item | undefined {
  return state.data[collection]?.values().next().value;
}

// --- chat -------------------------------------------------------------------------------------

export interface ChatEvent {
  type: "task" | "text" | "tool" | "question" | "done" | "error";
  [key: string]: any;
}

/** One chat turn: POST the message, then read the streamed events as they come. */
export async function chatTurn(
  ns: string,
  agent: string,
  body: { message: string; contextId?: string; taskId?: string },
  onEvent: (event: ChatEvent) => void,
  signal?: AbortSignal,
): Promise<void> {
  const response = await fetch(`${nsPath(ns)}/agents/${encodeURIComponent(agent)}/chat`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok || !response.body) throw await failure(response);
  const parser = createParser({
    onEvent(message) {
      if (message.event === "chat") onEvent(JSON.parse(message.data) as ChatEvent);
    },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parser.feed(value);
  }
}
