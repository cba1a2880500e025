// A workflow drawn as a graph: dagre lays it out (top to bottom, so a fan-out's steps sit side by
// side), SVG draws it. Nodes are coloured by the run's step phases when a run is shown.
import dagre from "@dagrejs/dagre";
import { useMemo } from "preact/hooks";
import type { Item } from "./api";

const NODE_W = 176;
const NODE_H = 56;
const SMALL_W = 120;
const SMALL_H = 34;

interface Placed {
  node: Item;
  x: number;
  y: number;
  w: number;
  h: number;
}

interface Laid {
  nodes: Placed[];
  edges: { edge: Item; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
}

function layout(graph: Item): Laid {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 54, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes as Item[]) {
    const small = node.kind !== "step";
    g.setNode(node.id, { width: small ? SMALL_W : NODE_W, height: small ? SMALL_H : NODE_H });
  }
  (graph.edges as Item[]).forEach((edge, index) => {
    // A loop goes back up: leave it out of the ranking so the steps keep their order.
    if (edge.kind === "loop") return;
    g.setEdge(edge.source, edge.target, { label: edge.label, width: edge.label ? 60 : 0, height: edge.label ? 14 : 0 }, String(index));
  });
  dagre.layout(g);
  const nodes: Placed[] = (graph.nodes as Item[]).map((node) => {
    const placed = g.node(node.id);
    return { node, x: placed.x, y: placed.y, w: placed.width, h: placed.height };
  });
  const byId = new Map(nodes.map((n) => [n.node.id, n]));
  const edges = (graph.edges as Item[]).map((edge, index) => {
    if (edge.kind === "loop") {
      const from = byId.get(edge.source)!;
      const to = byId.get(edge.target)!;
      const side = Math.max(from.x + from.w / 2, to.x + to.w / 2) + 40;
      return {
        edge,
        points: [
          { x: from.x + from.w / 2, y: from.y },
          { x: side, y: from.y },
          { x: side, y: to.y },
          { x: to.x + to.w / 2, y: to.y },
        ],
      };
    }
    return { edge, points: g.edge({ v: edge.source, w: edge.target, name: String(index) }).points ?? [] };
  });
  const info = g.graph();
  const loopRoom = edges.some((e) => e.edge.kind === "loop") ? 260 : 0;
  return { nodes, edges, width: (info.width ?? 0) + loopRoom, height: info.height ?? 0 };
}

function path(points: { x: number; y: number }[]): string {
  return points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
}

export interface GraphProps {
  graph: Item;
  /** step name → recorded status (phase, agent, …) of a run */
  steps?: Record<string, Item>;
  selected?: string | null;
  onSelect?: (step: string) => void;
}

export function WorkflowGraph(props: GraphProps) {
  const laid = useMemo(() => layout(props.graph), [JSON.stringify(props.graph)]);
  if (props.graph.error) return <div class="problem error">This workflow cannot be drawn: {props.graph.error}</div>;
  const steps = props.steps ?? {};
  const phaseOf = (node: Item): string | undefined => {
    if (node.kind === "step") return steps[node.id]?.phase ?? (props.steps ? "Pending" : undefined);
    if (node.kind === "choice") {
      const chosen = steps[node.step];
      if (!chosen?.agent) return undefined;
      return chosen.agent === node.label ? chosen.phase : "Skipped";
    }
    return undefined;
  };
  return (
    <div class="graph">
      <svg width={laid.width} height={laid.height} viewBox={`0 0 ${laid.width} ${laid.height}`} role="img"
        aria-label="workflow graph">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
          </marker>
        </defs>
        {laid.edges.map(({ edge, points }) => {
          const mid = points[Math.floor(points.length / 2)] ?? { x: 0, y: 0 };
          return (
            <g class={`edge ${edge.kind}`} data-edge={`${edge.source}->${edge.target}`} data-kind={edge.kind}>
              <path d={path(points)} marker-end="url(#arrow)" />
              {edge.label && (
                <text x={edge.kind === "loop" ? mid.x + 6 : mid.x + 4} y={mid.y - 4} class="edge-label">
                  {edge.label.length > 48 ? edge.label.slice(0, 47) + "…" : edge.label}
                </text>
              )}
            </g>
          );
        })}
        {laid.nodes.map(({ node, x, y, w, h }) => {
          const phase = phaseOf(node);
          const isStep = node.kind === "step";
          const marks = [
            node.parallel ? "parallel" : "",
            node.loop ? `loop ≤${node.loop.maxIterations}` : "",
            node.route ? "routed" : "",
            node.when ? "when" : "",
          ].filter(Boolean);
          return (
            <g
              class={`node ${node.kind} ${phase ? "phase-" + phase : ""} ${props.selected === node.id ? "selected" : ""}`}
              transform={`translate(${x - w / 2},${y - h / 2})`}
              data-node={node.id}
              data-step={isStep ? node.id : undefined}
              data-phase={phase}
              onClick={() => isStep && props.onSelect?.(node.id)}
            >
              <title>{isStep ? `${node.id}${node.agent ? ` (agent ${node.agent})` : ""}${node.when ? `\nwhen ${node.when}` : ""}${phase ? `\n${phase}` : ""}` : node.label}</title>
              <rect width={w} height={h} rx={isStep ? 8 : h / 2} />
              <text x={w / 2} y={isStep ? 22 : h / 2 + 4} class="label">{node.label}</text>
              {isStep && (
                <text x={w / 2} y={40} class="sub">
                  {node.agent ? node.agent : node.route === "router" ? "router picks the agent" : "routed by conditions"}
                  {marks.length ? ` · ${marks.join(" · ")}` : ""}
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </div>
  );
}

const PATTERN_TEXT: Record<string, string> = {
  sequence: "sequence",
  "fan-out": "parallel fan-out",
  dag: "DAG (dependsOn)",
  loop: "loop",
  route: "routing",
};

export function Patterns(props: { patterns: Item[] }) {
  if (!props.patterns.length) return null;
  return (
    <p class="patterns">
      {props.patterns.map((p) => (
        <span class="pattern" data-pattern={p.kind}>
          {PATTERN_TEXT[p.kind] ?? p.kind}: {p.steps.join(p.kind === "fan-out" ? " ∥ " : " → ")}
          {p.agents ? ` → ${p.agents.join(" | ")}` : ""}
        </span>
      ))}
    </p>
  );
}
