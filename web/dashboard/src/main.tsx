// The dashboard's shell: who is signed in, which namespace, and which page the URL's hash names.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { AgentPage } from "./agent";
import { ApiError, type Session, getJson, postJson } from "./api";
import { Overview } from "./overview";
import "./style.css";
import { href } from "./ui";
import { RunPage, WorkflowPage } from "./workflow";

function useHash(): string[] {
  const read = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [parts, setParts] = useState(read);
  useEffect(() => {
    const changed = () => setParts(read());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return parts;
}

function SignIn(props: { mode: string; onDone: () => void }) {
  const [token, setToken] = useState("");
  const [failure, setFailure] = useState<string | null>(null);
  if (props.mode !== "token") {
    return (
      <div class="signin" data-page="signin">
        <h1>Kagent</h1>
        <p>Open the address <code>kagent dashboard</code> printed: it carries a key that signs this browser in.</p>
      </div>
    );
  }
  const submit = async (event: Event) => {
    event.preventDefault();
    try {
      await postJson("/api/login", { token });
      props.onDone();
    } catch (error) {
      setFailure(error instanceof ApiError ? error.message : String(error));
    }
  };
  return (
    <form class="signin" onSubmit={submit} data-page="signin">
      <h1>Sign in to Kagent</h1>
      <p>Paste a Kubernetes bearer token. The dashboard acts with exactly its rights: you see and do only
        what your Kubernetes user may.</p>
      <p class="dim">For a ServiceAccount: <code>kubectl create token NAME -n NAMESPACE</code>. With OIDC, your ID token.</p>
      <textarea name="token" rows={4} value={token} onInput={(e) => setToken((e.target as HTMLTextAreaElement).value)} />
      {failure && <p class="form-error" data-form-error>{failure}</p>}
      <button type="submit" disabled={!token.trim()}>Sign in</button>
    </form>
  );
}

function NamespacePicker(props: { session: Session; current: string }) {
  const go = (ns: string) => ns && (location.hash = href("ns", ns));
  if (props.session.namespaces) {
    const names = props.session.namespaces.includes(props.current) ? props.session.namespaces : [props.current, ...props.session.namespaces];
    return (
      <select name="namespace" aria-label="namespace" value={props.current} onChange={(e) => go((e.target as HTMLSelectElement).value)}>
        {names.map((n) => <option value={n}>{n}</option>)}
      </select>
    );
  }
  return (
    <form onSubmit={(e) => { e.preventDefault(); go(((e.target as HTMLFormElement).elements.namedItem("namespace") as HTMLInputElement).value.trim()); }}>
      <input name="namespace" aria-label="namespace" value={props.current} title="You may not list namespaces; type one" />
    </form>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [signIn, setSignIn] = useState<string | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const parts = useHash();
  const load = () =>
    getJson<Session>("/api/session")
      .then((s) => { setSession(s); setSignIn(null); setFailure(null); })
      .catch((e) => {
        if (e instanceof ApiError && e.status === 401) {
          setSession(null);
          fetch("/api/session").then((r) => r.json()).then((b) => setSignIn(b.signIn ?? "kubeconfig"));
        } else setFailure(e instanceof ApiError ? e.message : String(e));
      });
  useEffect(() => {
    load();
    const out = () => load();
    window.addEventListener("kagent:signed-out", out);
    return () => window.removeEventListener("kagent:signed-out", out);
  }, []);
  if (signIn) return <SignIn mode={signIn} onDone={load} />;
  if (failure) return <div class="problem error"><h2>The dashboard cannot reach the cluster</h2><p>{failure}</p><button onClick={load}>Try again</button></div>;
  if (!session) return <p class="dim">Loading…</p>;
  const [first, ns, kind, name] = parts;
  const namespace = first === "ns" && ns ? ns : session.defaultNamespace;
  let page;
  if (first !== "ns" || !kind) page = <Overview ns={namespace} user={session.user} />;
  else if (kind === "agents" && name) page = <AgentPage ns={namespace} name={name} user={session.user} />;
  else if (kind === "workflows" && name) page = <WorkflowPage ns={namespace} name={name} user={session.user} />;
  else if (kind === "runs" && name) page = <RunPage ns={namespace} name={name} user={session.user} />;
  else page = <Overview ns={namespace} user={session.user} />;
  const signOut = async () => {
    await postJson("/api/logout", {});
    load();
  };
  return (
    <>
      <header class="top">
        <a class="brand" href={href("ns", namespace)}>Kagent</a>
        <nav>
          <span class="dim">namespace</span> <NamespacePicker session={session} current={namespace} />
          {kind && <a href={href("ns", namespace)}>overview</a>}
        </nav>
        <span class="who" title={`agents reached through ${session.agentsVia}`}>
          {session.user}{session.mode === "token" && <button class="link" onClick={signOut}>sign out</button>}
        </span>
      </header>
      <main key={parts.join("/")}>{page}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
