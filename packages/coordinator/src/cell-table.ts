import type { CellEntry } from './scheduler-types.js';

/**
 * The scheduler's cells by id, in submission order, as an immutable ReadonlyMap. `with` returns a
 * new table that shares every unchanged entry with this one (one copy of an array of references,
 * not of a 10,000-entry map), so a scheduler step stays cheap on a large sweep and never changes
 * the table an earlier state holds.
 */
export class CellTable implements ReadonlyMap<string, CellEntry> {
  static readonly EMPTY = new CellTable(new Map(), []);

  private constructor(
    /** id -> position in `list`; never changed once the table is built. */
    private readonly index: ReadonlyMap<string, number>,
    private readonly list: readonly CellEntry[],
  ) {}

  /** A table of `cells`, in the order given. */
  static of(cells: Iterable<CellEntry>): CellTable {
    return CellTable.EMPTY.with(cells);
  }

  /** This table with each of `changes` in place of the entry of its id, or appended when new. */
  with(changes: Iterable<CellEntry>): CellTable {
    let list: CellEntry[] | null = null;
    let index: Map<string, number> | null = null;
    for (const c of changes) {
      list ??= this.list.slice();
      const at = (index ?? this.index).get(c.id);
      if (at !== undefined) {
        list[at] = c;
        continue;
      }
      index ??= new Map(this.index);
      index.set(c.id, list.length);
      list.push(c);
    }
    return list ? new CellTable(index ?? this.index, list) : this;
  }

  get size(): number {
    return this.list.length;
  }

  get(id: string): CellEntry | undefined {
    const at = this.index.get(id);
    return at === undefined ? undefined : this.list[at];
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  values(): ArrayIterator<CellEntry> {
    return this.list.values();
  }

  keys(): ArrayIterator<string> {
    return this.list.map((c) => c.id).values();
  }

  entries(): ArrayIterator<[string, CellEntry]> {
    return this.list.map((c): [string, CellEntry] => [c.id, c]).values();
  }

  forEach(fn: (value: CellEntry, key: string, map: ReadonlyMap<string, CellEntry>) => void, thisArg?: unknown): void {
    for (const c of this.list) fn.call(thisArg, c, c.id, this);
  }

  [Symbol.iterator](): ArrayIterator<[string, CellEntry]> {
    return this.entries();
  }
}
