// Where unsent requests wait: IndexedDB, so a reload (or a browser restart) still sends them; memory when the
// page has no IndexedDB (private modes of some browsers, tests).

export interface Job {
  /** Unique per request; the idempotency of the request itself comes from the client ids in it. */
  id: string;
  /** Enqueue order: jobs of one key are sent in this order (media after its interaction). */
  seq: number;
  /** The ingest key it is sent with: a page only sends its own key's jobs. */
  key: string;
  method: "GET" | "POST" | "DELETE";
  path: string;
  body?: string | Blob;
  contentType?: string;
  contentEncoding?: string;
  attempts: number;
  /** Epoch ms before which it is not retried (backoff, Retry-After). */
  notBefore: number;
  /** The wait is the server's (Retry-After), not the network's: coming back online does not cut it short. */
  retryAfter?: boolean;
}

export interface Store {
  all(): Promise<Job[]>;
  put(job: Job): Promise<void>;
  delete(id: string): Promise<void>;
}

export class MemoryStore implements Store {
  private jobs = new Map<string, Job>();
  async all(): Promise<Job[]> {
    return [...this.jobs.values()];
  }
  async put(job: Job): Promise<void> {
    this.jobs.set(job.id, { ...job });
  }
  async delete(id: string): Promise<void> {
    this.jobs.delete(id);
  }
}

const DB = "relay-sdk";
const OUTBOX = "outbox";

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export class IdbStore implements Store {
  private db: Promise<IDBDatabase>;

  constructor(factory: IDBFactory) {
    const open = factory.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(OUTBOX, { keyPath: "id" });
    this.db = done(open);
  }

  private async tx<T>(mode: IDBTransactionMode, run: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.db;
    return done(run(db.transaction(OUTBOX, mode).objectStore(OUTBOX)));
  }

  all(): Promise<Job[]> {
    return this.tx("readonly", (s) => s.getAll() as IDBRequest<Job[]>);
  }
  async put(job: Job): Promise<void> {
    await this.tx("readwrite", (s) => s.put(job));
  }
  async delete(id: string): Promise<void> {
    await this.tx("readwrite", (s) => s.delete(id));
  }
}

/** IndexedDB when it opens, else memory. */
export async function openStore(): Promise<Store> {
  if (typeof indexedDB === "undefined") return new MemoryStore();
  try {
    const store = new IdbStore(indexedDB);
    await store.all();
    return store;
  } catch {
    return new MemoryStore();
  }
}
