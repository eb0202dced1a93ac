/**
 * A small deterministic ONNX graph builder over onnx-proto. It only does what the generators in
 * tools/ need: float32/int64 tensors, nodes with attributes, typed graph inputs/outputs with
 * symbolic dimensions. Building the same graph twice gives byte-identical model files because
 * names come from counters, tensors are written as little-endian raw data and nothing reads
 * the clock.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** ONNX IR version written into every model (IR 8 = ONNX 1.10+, read by every current runtime). */
export const IR_VERSION = 8;
/** Default-domain opset: 17 is the first with LayerNormalization. */
export const OPSET_VERSION = 17;
export const PRODUCER_NAME = "clipguard-tools";

/** Element types the generators use. */
export type ElementType = "float32" | "int64";
/** A dimension: a fixed size, or a symbolic name such as "batch" or "sequence". */
export type Dim = number | string;

/** A constant tensor, as an initializer or a `tensor` attribute. */
export type TensorValue =
  | { type: "float32"; dims: readonly number[]; data: Float32Array | readonly number[] }
  | { type: "int64"; dims: readonly number[]; data: BigInt64Array | readonly number[] };

/** One node attribute; build them with {@link attr}. */
export type AttributeValue =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: readonly number[] }
  | { kind: "floats"; value: readonly number[] }
  | { kind: "string"; value: string }
  | { kind: "tensor"; value: TensorValue };

/** Attribute constructors, so that an int 1 and a float 1.0 are never confused. */
export const attr = {
  int: (value: number): AttributeValue => ({ kind: "int", value }),
  float: (value: number): AttributeValue => ({ kind: "float", value }),
  ints: (value: readonly number[]): AttributeValue => ({ kind: "ints", value }),
  floats: (value: readonly number[]): AttributeValue => ({ kind: "floats", value }),
  string: (value: string): AttributeValue => ({ kind: "string", value }),
  tensor: (value: TensorValue): AttributeValue => ({ kind: "tensor", value }),
} as const;

type Attributes = Readonly<Record<string, AttributeValue>>;

const DATA_TYPE: Record<ElementType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  int64: onnx.TensorProto.DataType.INT64,
};

function elementCount(dims: readonly number[]): number {
  return dims.reduce((product, dim) => product * dim, 1);
}

/** Serializes a tensor as little-endian raw bytes, whatever the host's byte order. */
function tensorProto(name: string, tensor: TensorValue): onnxProto.onnx.ITensorProto {
  const count = elementCount(tensor.dims);
  if (tensor.data.length !== count) {
    throw new Error(`tensor ${name}: dims [${tensor.dims.join(", ")}] need ${count} values, got ${tensor.data.length}`);
  }
  let raw: Uint8Array;
  if (tensor.type === "float32") {
    raw = new Uint8Array(count * 4);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < count; i++) view.setFloat32(i * 4, Number(tensor.data[i]), true);
  } else {
    raw = new Uint8Array(count * 8);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < count; i++) view.setBigInt64(i * 8, BigInt(tensor.data[i] ?? 0), true);
  }
  return { name, dims: [...tensor.dims], dataType: DATA_TYPE[tensor.type], rawData: raw };
}

function attributeProto(name: string, value: AttributeValue): onnxProto.onnx.IAttributeProto {
  const type = onnx.AttributeProto.AttributeType;
  switch (value.kind) {
    case "int":
      return { name, type: type.INT, i: value.value };
    case "float":
      return { name, type: type.FLOAT, f: value.value };
    case "ints":
      return { name, type: type.INTS, ints: [...value.value] };
    case "floats":
      return { name, type: type.FLOATS, floats: [...value.value] };
    case "string":
      return { name, type: type.STRING, s: new TextEncoder().encode(value.value) };
    case "tensor":
      return { name, type: type.TENSOR, t: tensorProto("", value.value) };
  }
}

function valueInfo(name: string, type: ElementType, dims: readonly Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: DATA_TYPE[type],
        shape: { dim: dims.map((dim) => (typeof dim === "number" ? { dimValue: dim } : { dimParam: dim })) },
      },
    },
  };
}

/** Accumulates one ONNX graph; see the file header for the determinism guarantees. */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly usedNames = new Set<string>();
  private readonly counters = new Map<string, number>();

  /** @param graphName written as the graph's name; also used as the model's doc string. */
  constructor(
    private readonly graphName: string,
    private readonly docString = "",
  ) {}

  /** A value name not used so far in this graph, derived from `prefix`. */
  freshName(prefix: string): string {
    let n = this.counters.get(prefix) ?? 0;
    let name = `${prefix}_${n}`;
    while (this.usedNames.has(name)) name = `${prefix}_${++n}`;
    this.counters.set(prefix, n + 1);
    this.usedNames.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`ONNX value name used twice: ${name}`);
    this.usedNames.add(name);
    return name;
  }

  /** Declares a graph input; returns its name. */
  addInput(name: string, type: ElementType, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(this.claim(name), type, dims));
    return name;
  }

  /** Declares a graph output. `source` is renamed through an Identity when it differs from `name`. */
  addOutput(name: string, type: ElementType, dims: readonly Dim[], source = name): void {
    if (source !== name) this.addNode("Identity", [source], [this.claim(name)]);
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** Adds a float32 initializer; returns its name. */
  addFloatInitializer(name: string, dims: readonly number[], data: Float32Array | readonly number[]): string {
    this.initializers.push(tensorProto(this.claim(name), { type: "float32", dims, data }));
    return name;
  }

  /** Adds an int64 initializer; returns its name. */
  addInt64Initializer(name: string, dims: readonly number[], data: BigInt64Array | readonly number[]): string {
    this.initializers.push(tensorProto(this.claim(name), { type: "int64", dims, data }));
    return name;
  }

  /** A float32 constant with a generated name (a scalar when `dims` is omitted). */
  constFloat(values: readonly number[] | Float32Array, dims: readonly number[] = []): string {
    const name = this.freshName("const_f");
    this.initializers.push(tensorProto(name, { type: "float32", dims, data: values }));
    return name;
  }

  /** An int64 constant with a generated name; a 1-D vector when `dims` is omitted. */
  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = this.freshName("const_i");
    this.initializers.push(tensorProto(name, { type: "int64", dims, data: values }));
    return name;
  }

  /** Adds a node with explicit output names. Use "" for an omitted optional input. */
  addNode(opType: string, inputs: readonly string[], outputs: readonly string[], attributes: Attributes = {}): void {
    this.nodes.push({
      name: this.freshName(`node_${opType}`),
      opType,
      domain: "",
      input: [...inputs],
      output: [...outputs],
      attribute: Object.entries(attributes).map(([name, value]) => attributeProto(name, value)),
    });
  }

  /** Adds a single-output node and returns the generated output name. */
  op(opType: string, inputs: readonly string[], attributes: Attributes = {}, outputPrefix = opType.toLowerCase()): string {
    const output = this.freshName(outputPrefix);
    this.addNode(opType, inputs, [output], attributes);
    return output;
  }

  /** The serialized ModelProto. */
  toBytes(): Uint8Array {
    const model: onnxProto.onnx.IModelProto = {
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET_VERSION }],
      producerName: PRODUCER_NAME,
      producerVersion: "1",
      docString: this.docString,
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    return onnx.ModelProto.encode(model).finish();
  }
}
