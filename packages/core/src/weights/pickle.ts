/**
 * A restricted unpickler: enough of Python's pickle protocols 0-5 to read torch state_dicts, and
 * nothing that executes code. Only allow-listed globals are callable (like torch's
 * `weights_only=True`); any other global fails with the name of what the file asked for.
 */

export class PickleError extends Error {}

export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python dict or OrderedDict (keys kept in insertion order). */
export class PyDict extends Map<unknown, unknown> {
  attributes: unknown = undefined;
}

/** An object made by NEWOBJ/BUILD from an allow-listed class (kept opaque). */
export class PyObject {
  state: unknown = undefined;
  constructor(
    readonly cls: PyGlobal,
    readonly args: readonly unknown[],
  ) {}
}

export type Reducer = (args: readonly unknown[]) => unknown;

export interface UnpickleOptions {
  /** Callables a REDUCE may invoke, by `module.name`. */
  readonly reducers: ReadonlyMap<string, Reducer>;
  /** Classes NEWOBJ may instantiate (opaquely), by `module.name`. */
  readonly classes?: ReadonlySet<string>;
  /** Globals that may appear as values (e.g. storage types), by `module.name`. */
  readonly values?: ReadonlySet<string>;
  readonly persistentLoad?: (pid: unknown) => unknown;
}

const MARK = Symbol('mark');

/*
 * Hand-written on purpose: no maintained JavaScript library offers an allow-listing unpickler (the
 * semantics of torch.load(weights_only=True): globals resolved only from an allow-list, REDUCE only
 * through allowed callables, BUILD never calling __setstate__). The general-purpose JS unpicklers
 * either resolve any global or leave the policy to the caller's callbacks; here the policy is the
 * interpreter: an opcode this table lacks is refused, and the only opcodes that touch globals
 * (GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, NEWOBJ_EX) go through makeGlobal and the reducers.
 */

/** The unpickler's state: the input and its position, the stack, the memo, and the result once STOPped. */
class Machine {
  pos = 0;
  readonly stack: unknown[] = [];
  readonly memo = new Map<number, unknown>();
  done = false;
  result: unknown = undefined;
  private readonly view: DataView;
  private static readonly utf8 = new TextDecoder();
  private static readonly latin1 = new TextDecoder('latin1');

  constructor(
    readonly bytes: Uint8Array,
    readonly options: UnpickleOptions,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  need(n: number): void {
    if (this.pos + n > this.bytes.length) throw new PickleError('pickle data is truncated');
  }
  u8(): number {
    this.need(1);
    return this.bytes[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = Number(this.view.getBigUint64(this.pos, true));
    this.pos += 8;
    return v;
  }
  /** A big-endian float64 (BINFLOAT). */
  f64be(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, false);
    this.pos += 8;
    return v;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const b = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  utf8(n: number): string {
    return Machine.utf8.decode(this.take(n));
  }
  latin1(n: number): string {
    return Machine.latin1.decode(this.take(n));
  }
  /** Up to the next newline (the text protocol's arguments), without it. */
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new PickleError('pickle data is truncated');
    const s = Machine.latin1.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }

  push(v: unknown): void {
    this.stack.push(v);
  }
  pop(): unknown {
    if (this.stack.length === 0) throw new PickleError('pickle stack underflow');
    return this.stack.pop();
  }
  /** The items above the topmost MARK, removed with it. */
  popMark(): unknown[] {
    const { stack } = this;
    let i = stack.length - 1;
    while (i >= 0 && stack[i] !== MARK) i--;
    if (i < 0) throw new PickleError('pickle MARK not found');
    const items = stack.slice(i + 1);
    stack.length = i;
    return items;
  }
  top(): unknown {
    if (this.stack.length === 0) throw new PickleError('pickle stack underflow');
    return this.stack[this.stack.length - 1];
  }

  /** A global the file names: only one of the allow-lists' (the one check every global passes). */
  makeGlobal(module: string, name: string): PyGlobal {
    const g = new PyGlobal(module, name);
    const q = g.qualified;
    const { reducers, classes, values } = this.options;
    if (!reducers.has(q) && !classes?.has(q) && !values?.has(q)) {
      throw new PickleError(
        `pickle refers to ${q}, which ferry does not load (only tensors and state dicts are allowed)`,
      );
    }
    return g;
  }

  persistent(pid: unknown): unknown {
    if (!this.options.persistentLoad) throw new PickleError('pickle has persistent ids but no loader');
    return this.options.persistentLoad(pid);
  }
}

type Handler = (m: Machine) => void;

function setItems(target: unknown, items: readonly unknown[]): void {
  if (!(target instanceof Map)) throw new PickleError('SETITEMS on a non-dict');
  for (let i = 0; i + 1 < items.length; i += 2) target.set(items[i], items[i + 1]);
}

/** A little-endian two's-complement integer (LONG1, LONG4): a number when safe, else a bigint. */
function longFrom(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Framing, the stack and containers. */
const STRUCTURE: [number, Handler][] = [
  [0x80, (m) => void m.u8()], // PROTO
  [0x95, (m) => void m.u64()], // FRAME
  [
    0x2e, // STOP
    (m) => {
      m.result = m.pop();
      m.done = true;
    },
  ],
  [0x28, (m) => m.push(MARK)], // MARK
  [0x30, (m) => void m.pop()], // POP
  [0x31, (m) => void m.popMark()], // POP_MARK
  [0x32, (m) => m.push(m.top())], // DUP
  [0x7d, (m) => m.push(new PyDict())], // EMPTY_DICT
  [0x5d, (m) => m.push([])], // EMPTY_LIST
  [0x29, (m) => m.push(Object.freeze([]))], // EMPTY_TUPLE
  [0x8f, (m) => m.push(new Set())], // EMPTY_SET
  [
    0x90, // ADDITEMS
    (m) => {
      const items = m.popMark();
      const s = m.top();
      if (!(s instanceof Set)) throw new PickleError('ADDITEMS on a non-set');
      for (const it of items) s.add(it);
    },
  ],
  [0x91, (m) => m.push(new Set(m.popMark()))], // FROZENSET
  [0x74, (m) => m.push(Object.freeze(m.popMark()))], // TUPLE
  [0x85, (m) => m.push(Object.freeze([m.pop()]))], // TUPLE1
  [0x86, (m) => m.push(Object.freeze(popN(m, 2)))], // TUPLE2
  [0x87, (m) => m.push(Object.freeze(popN(m, 3)))], // TUPLE3
  [0x6c, (m) => m.push(m.popMark())], // LIST
  [
    0x64, // DICT
    (m) => {
      const d = new PyDict();
      setItems(d, m.popMark());
      m.push(d);
    },
  ],
  [0x61, (m) => appendTo(m, [m.pop()], 'APPEND')], // APPEND
  [0x65, (m) => appendTo(m, m.popMark(), 'APPENDS')], // APPENDS
  [0x73, (m) => setItemsOnTop(m, popN(m, 2))], // SETITEM
  [0x75, (m) => setItemsOnTop(m, m.popMark())], // SETITEMS
];

/** The top n items, removed, in stack order. */
function popN(m: Machine, n: number): unknown[] {
  const out = new Array<unknown>(n);
  for (let i = n - 1; i >= 0; i--) out[i] = m.pop();
  return out;
}

/** Items taken off the stack first, then set on the dict below them. */
function setItemsOnTop(m: Machine, items: readonly unknown[]): void {
  setItems(m.top(), items);
}

function appendTo(m: Machine, items: readonly unknown[], op: string): void {
  const l = m.top();
  if (!Array.isArray(l)) throw new PickleError(`${op} on a non-list`);
  l.push(...items);
}

/** Numbers, strings and bytes. */
const SCALARS: [number, Handler][] = [
  [0x4a, (m) => m.push(m.i32())], // BININT
  [0x4b, (m) => m.push(m.u8())], // BININT1
  [0x4d, (m) => m.push(m.u16())], // BININT2
  [0x8a, (m) => m.push(longFrom(m.take(m.u8())))], // LONG1
  [0x8b, (m) => m.push(longFrom(m.take(m.u32())))], // LONG4
  [
    0x49, // INT (protocol 0 writes booleans as 01 / 00)
    (m) => {
      const s = m.line();
      m.push(s === '01' ? true : s === '00' ? false : Number.parseInt(s, 10));
    },
  ],
  [0x4c, (m) => m.push(Number.parseInt(m.line().replace(/L$/, ''), 10))], // LONG
  [0x47, (m) => m.push(m.f64be())], // BINFLOAT
  [0x46, (m) => m.push(Number.parseFloat(m.line()))], // FLOAT
  [0x4e, (m) => m.push(null)], // NONE
  [0x88, (m) => m.push(true)], // NEWTRUE
  [0x89, (m) => m.push(false)], // NEWFALSE
  [0x58, (m) => m.push(m.utf8(m.u32()))], // BINUNICODE
  [0x8c, (m) => m.push(m.utf8(m.u8()))], // SHORT_BINUNICODE
  [0x8d, (m) => m.push(m.utf8(m.u64()))], // BINUNICODE8
  [0x56, (m) => m.push(m.line())], // UNICODE (raw-unicode-escape; ASCII in practice)
  [0x54, (m) => m.push(m.latin1(m.i32()))], // BINSTRING
  [0x55, (m) => m.push(m.latin1(m.u8()))], // SHORT_BINSTRING
  [0x53, (m) => m.push(m.line().replace(/^['"]|['"]$/g, ''))], // STRING
  [0x42, (m) => m.push(m.take(m.u32()).slice())], // BINBYTES
  [0x43, (m) => m.push(m.take(m.u8()).slice())], // SHORT_BINBYTES
  [0x8e, (m) => m.push(m.take(m.u64()).slice())], // BINBYTES8
  [0x96, (m) => m.push(m.take(m.u64()).slice())], // BYTEARRAY8
];

/** Globals and objects: where the allow-lists apply. */
const OBJECTS: [number, Handler][] = [
  [
    0x63, // GLOBAL
    (m) => {
      const module = m.line();
      const name = m.line();
      m.push(m.makeGlobal(module, name));
    },
  ],
  [
    0x93, // STACK_GLOBAL
    (m) => {
      const [module, name] = popN(m, 2);
      if (typeof module !== 'string' || typeof name !== 'string') throw new PickleError('STACK_GLOBAL needs strings');
      m.push(m.makeGlobal(module, name));
    },
  ],
  [
    0x52, // REDUCE: only an allow-listed callable
    (m) => {
      const [fn, args] = popN(m, 2);
      if (!(fn instanceof PyGlobal)) throw new PickleError('REDUCE on a non-callable');
      const reducer = m.options.reducers.get(fn.qualified);
      if (!reducer) throw new PickleError(`pickle calls ${fn.qualified}, which ferry does not allow`);
      m.push(reducer(args as unknown[]));
    },
  ],
  [
    0x81, // NEWOBJ: a reducer of the class, or an opaque object
    (m) => {
      const [cls, args] = popN(m, 2);
      if (!(cls instanceof PyGlobal)) throw new PickleError('NEWOBJ on a non-class');
      const reducer = m.options.reducers.get(cls.qualified);
      m.push(reducer ? reducer(args as unknown[]) : new PyObject(cls, args as unknown[]));
    },
  ],
  [
    0x92, // NEWOBJ_EX (keyword arguments dropped): an opaque object
    (m) => {
      const [cls, args] = popN(m, 3);
      if (!(cls instanceof PyGlobal)) throw new PickleError('NEWOBJ_EX on a non-class');
      m.push(new PyObject(cls, args as unknown[]));
    },
  ],
  [
    0x62, // BUILD: the state is kept, never applied by calling anything
    (m) => {
      const state = m.pop();
      const obj = m.top();
      if (obj instanceof PyDict) obj.attributes = state;
      else if (obj instanceof PyObject) obj.state = state;
      // Tensors carry no extra state in a state_dict; other objects keep theirs opaque.
    },
  ],
  [0x51, (m) => m.push(m.persistent(m.pop()))], // BINPERSID
  [0x50, (m) => m.push(m.persistent(m.line()))], // PERSID
];

/** The memo. */
const MEMO: [number, Handler][] = [
  [0x71, (m) => m.memo.set(m.u8(), m.top())], // BINPUT
  [0x72, (m) => m.memo.set(m.u32(), m.top())], // LONG_BINPUT
  [0x70, (m) => m.memo.set(Number.parseInt(m.line(), 10), m.top())], // PUT
  [0x94, (m) => m.memo.set(m.memo.size, m.top())], // MEMOIZE
  [0x68, (m) => memoGet(m, m.u8())], // BINGET
  [0x6a, (m) => memoGet(m, m.u32())], // LONG_BINGET
  [0x67, (m) => memoGet(m, Number.parseInt(m.line(), 10))], // GET
];

function memoGet(m: Machine, key: number): void {
  if (!m.memo.has(key)) throw new PickleError(`pickle memo has no entry ${key}`);
  m.push(m.memo.get(key));
}

/** Every opcode ferry interprets; any other is refused. */
const OPCODES: ReadonlyMap<number, Handler> = new Map([...STRUCTURE, ...SCALARS, ...OBJECTS, ...MEMO]);

export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  const m = new Machine(bytes, options);
  while (!m.done) {
    const op = m.u8();
    const handler = OPCODES.get(op);
    if (!handler) throw new PickleError(`unsupported pickle opcode 0x${op.toString(16)} at byte ${m.pos - 1}`);
    handler(m);
  }
  return m.result;
}
