/**
 * `SkillsvcClient`: a small typed client of `skillsvc.v1.SkillService` over
 * `@grpc/grpc-js`.
 *
 * Installs stream an archive file in 1 MiB chunks (never the whole file in memory)
 * with its SHA-256, which the server verifies, and a `request_id`, so a retried
 * `Install` returns the first operation instead of starting a second one.
 * `InstallProgress` is an async iterable of events; `installFile` + `wait` (or
 * `installAndWait`) follow an install to its end. Every failure is a
 * `SkillsvcError` subclass (see `errors.ts`).
 */

import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createReadStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";

import { ErrorDecoder, SkillsvcError, UnavailableError } from "./errors";
import { packFolder } from "./pack";
import { defaultProtoDirs, loadContract } from "./proto";
import {
  TERMINAL_STAGES,
  type DefinitionInput,
  type InstallEvent,
  type Operation,
  type SkillDefinition,
  type SkillEvent,
  type SkillPackage,
} from "./types";

/** The default address of `skillsvc serve`. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";
/** Upload chunk size: 1 MiB (the server accepts up to 4 MiB per message). */
export const CHUNK_BYTES = 1 << 20;
/** The server's message limit is 5 MiB; match it so 4 MiB chunks would pass too. */
const MAX_MESSAGE_BYTES = 5 * 1024 * 1024;

/** How to reach the server. */
export interface ClientOptions {
  /** `host:port`; default `127.0.0.1:50051`. */
  address?: string;
  /** Channel credentials; default plaintext (`grpc.credentials.createInsecure()`). */
  credentials?: grpc.ChannelCredentials;
  /** A bearer token sent as `authorization: Bearer <token>` (SKILLSVC_AUTH=jwt). */
  token?: string;
  /** Deadline of unary calls and of the upload, in milliseconds; default 30 s. */
  deadlineMs?: number;
  /** Where `skillsvc/v1/*.proto` and its imports are; default the repository's. */
  protoDirs?: string[];
}

/** An install's options. */
export interface InstallOptions {
  /** Version; default the manifest's (or one the service assigns). */
  version?: string;
  /** Make it current when ready (default true). */
  activate?: boolean;
  /** Idempotency key; default a new UUID. Reuse it to retry the same install safely. */
  requestId?: string;
}

/** Mutual TLS / TLS credentials from PEM contents. */
export function tlsCredentials(ca: Buffer, key?: Buffer, cert?: Buffer): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(ca, key ?? null, cert ?? null);
}

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;
type Unary<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: Callback<Res>,
) => grpc.ClientUnaryCall;

/** The generated stub's methods this client uses (proto-loader stubs are untyped). */
interface RawStub extends grpc.Client {
  CreateSkillDefinition: Unary<{ definition: DefinitionInput }, SkillDefinition>;
  GetSkillDefinition: Unary<{ skill_id: string }, SkillDefinition>;
  ListSkillDefinitions: Unary<
    { page_size: number; page_token: string; include_inactive: boolean },
    { definitions: SkillDefinition[]; next_page_token: string }
  >;
  UpdateSkillDefinition: Unary<
    { definition: DefinitionInput; update_mask: { paths: string[] } },
    SkillDefinition
  >;
  DeleteSkillDefinition: Unary<{ skill_id: string; force: boolean }, object>;
  GetPackage: Unary<{ skill_id: string; version: string }, SkillPackage>;
  ListPackages: Unary<
    { skill_id: string; page_size: number; page_token: string },
    { packages: SkillPackage[]; next_page_token: string }
  >;
  GetOperation: Unary<{ operation_id: string }, Operation>;
  ListOperations: Unary<
    { skill_id: string; page_size: number; page_token: string },
    { operations: Operation[]; next_page_token: string }
  >;
  Rollback: Unary<{ skill_id: string; target_version: string; reason: string }, Operation>;
  Retry: Unary<{ operation_id: string }, Operation>;
  Install(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: Callback<Operation>,
  ): grpc.ClientWritableStream<object>;
  InstallProgress(
    request: { operation_id: string },
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<InstallEvent>;
  WatchSkills(
    request: { skill_ids: string[]; since?: number },
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<SkillEvent>;
}

/** What `watchSkills` follows. */
export interface WatchOptions {
  /** The skills to follow; default every skill the caller may see. */
  skillIds?: string[];
  /** The `seq` of the last event seen earlier; default: from now. */
  since?: number;
  /** Reconnections tried in a row after `UNAVAILABLE` before giving up; default 5. */
  reconnects?: number;
}

/** SHA-256 (hex) of a file, read in 1 MiB pieces. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const piece of createReadStream(file, { highWaterMark: CHUNK_BYTES })) {
    hash.update(piece as Buffer);
  }
  return hash.digest("hex");
}

/** A client of one skillsvc server. Call `close()` when done. */
export class SkillsvcClient {
  readonly address: string;
  private readonly stub: RawStub;
  private readonly errors: ErrorDecoder;
  private readonly token: string | undefined;
  private readonly deadlineMs: number;

  constructor(options: ClientOptions = {}) {
    const contract = loadContract(options.protoDirs ?? defaultProtoDirs());
    this.address = options.address ?? DEFAULT_ADDRESS;
    this.stub = new contract.serviceClient(
      this.address,
      options.credentials ?? grpc.credentials.createInsecure(),
      {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      },
    ) as unknown as RawStub;
    this.errors = new ErrorDecoder(contract.root);
    this.token = options.token;
    this.deadlineMs = options.deadlineMs ?? 30_000;
  }

  /** Close the channel. */
  close(): void {
    this.stub.close();
  }

  /** Create a skill definition. */
  createDefinition(definition: DefinitionInput): Promise<SkillDefinition> {
    return this.unary(this.stub.CreateSkillDefinition, { definition });
  }

  /** One definition; `NotFoundError` if unknown (or not visible to the caller). */
  getDefinition(skillId: string): Promise<SkillDefinition> {
    return this.unary(this.stub.GetSkillDefinition, { skill_id: skillId });
  }

  /** Every definition the caller sees, across all pages. */
  async listDefinitions(options: { includeInactive?: boolean } = {}): Promise<SkillDefinition[]> {
    return this.allPages(async (page_token) => {
      const page = await this.unary(this.stub.ListSkillDefinitions, {
        page_size: 100,
        page_token,
        include_inactive: options.includeInactive ?? false,
      });
      return [page.definitions, page.next_page_token];
    });
  }

  /** Update the fields named in `paths` (e.g. `["description"]`). */
  updateDefinition(definition: DefinitionInput, paths: string[]): Promise<SkillDefinition> {
    return this.unary(this.stub.UpdateSkillDefinition, { definition, update_mask: { paths } });
  }

  /** Delete a definition; `force` also removes its packages and their files. */
  async deleteDefinition(skillId: string, force = false): Promise<void> {
    await this.unary(this.stub.DeleteSkillDefinition, { skill_id: skillId, force });
  }

  /** A package; the current version when `version` is omitted. */
  getPackage(skillId: string, version = ""): Promise<SkillPackage> {
    return this.unary(this.stub.GetPackage, { skill_id: skillId, version });
  }

  /** Every package of a skill, newest first, across all pages. */
  async listPackages(skillId: string): Promise<SkillPackage[]> {
    return this.allPages(async (page_token) => {
      const page = await this.unary(this.stub.ListPackages, {
        skill_id: skillId,
        page_size: 100,
        page_token,
      });
      return [page.packages, page.next_page_token];
    });
  }

  /** One operation. */
  getOperation(operationId: string): Promise<Operation> {
    return this.unary(this.stub.GetOperation, { operation_id: operationId });
  }

  /** A skill's install log (installs, retries, rollbacks), newest first, all pages. */
  async listOperations(skillId: string): Promise<Operation[]> {
    return this.allPages(async (page_token) => {
      const page = await this.unary(this.stub.ListOperations, {
        skill_id: skillId,
        page_size: 100,
        page_token,
      });
      return [page.operations, page.next_page_token];
    });
  }

  /** Make an earlier version current; no target = the last known-good version. */
  rollback(skillId: string, options: { to?: string; reason?: string } = {}): Promise<Operation> {
    return this.unary(this.stub.Rollback, {
      skill_id: skillId,
      target_version: options.to ?? "",
      reason: options.reason ?? "",
    });
  }

  /** Start a new attempt of a failed install, from the bytes the server kept. */
  retry(operationId: string): Promise<Operation> {
    return this.unary(this.stub.Retry, { operation_id: operationId });
  }

  /**
   * Upload the archive file `archive` into `skillId` and return the accepted operation
   * (the install goes on in the background: follow it with `progress` or `wait`).
   * The file is hashed first, then streamed in 1 MiB chunks; the server checks
   * the digest.
   */
  async installFile(
    skillId: string,
    archive: string,
    options: InstallOptions = {},
  ): Promise<Operation> {
    const info = await stat(archive);
    if (!info.isFile()) {
      throw new Error(`${archive} is not a file`);
    }
    const sha256 = await sha256File(archive);
    const spec = {
      skill_id: skillId,
      version: options.version ?? "",
      upload: { size_bytes: info.size },
      sha256,
      request_id: options.requestId ?? randomUUID(),
      ...(options.activate === undefined ? {} : { activate: options.activate }),
    };
    let settled = false;
    let call: grpc.ClientWritableStream<object> | undefined;
    const result = new Promise<Operation>((resolve, reject) => {
      call = this.stub.Install(this.metadata(), this.callOptions(), (error, operation) => {
        settled = true;
        if (error) {
          reject(this.errors.fromServiceError(error));
        } else {
          resolve(operation as Operation);
        }
      });
    });
    const stream = call as grpc.ClientWritableStream<object>;
    let readError: unknown;
    async function* pieces(): AsyncGenerator<Buffer> {
      try {
        for await (const piece of createReadStream(archive, { highWaterMark: CHUNK_BYTES })) {
          yield piece as Buffer;
        }
      } catch (error) {
        readError = error;
        throw error;
      }
    }
    // The server may refuse before every byte is in (unknown skill, bad spec): stop
    // writing then, and report its status, not a write error.
    void (async (): Promise<void> => {
      await write(stream, { spec });
      for await (const piece of pieces()) {
        if (settled) {
          return;
        }
        await write(stream, { chunk: piece });
      }
      stream.end();
    })().catch(() => {
      // Cancelling makes `result` settle; a refused call has ended the stream already.
      stream.cancel();
    });
    try {
      return await result;
    } catch (error) {
      // The file could not be read to the end (changed, removed): say that, not CANCELLED.
      throw readError ?? error;
    }
  }

  /**
   * Install a skill folder (packed deterministically, see `packFolder`, into a
   * temporary archive that is removed afterwards) or an archive file.
   */
  async install(skillId: string, source: string, options: InstallOptions = {}): Promise<Operation> {
    if (!(await stat(source)).isDirectory()) {
      return this.installFile(skillId, source, options);
    }
    const scratch = await mkdtemp(path.join(tmpdir(), "skillsvc-pack-"));
    try {
      const packed = await packFolder(source, path.join(scratch, "skill.tar.gz"));
      return await this.installFile(skillId, packed.path, options);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** `install` a folder or an archive and follow it; resolves with the `DONE` event. */
  async installAndWait(
    skillId: string,
    source: string,
    options: InstallOptions = {},
    onEvent?: (event: InstallEvent) => void,
  ): Promise<InstallEvent> {
    const operation = await this.install(skillId, source, options);
    return this.wait(operation.operation_id, onEvent);
  }

  /**
   * The events of an install: the current state first, then every change, ending
   * after the terminal one (`DONE` or `FAILED`).
   */
  async *progress(operationId: string): AsyncGenerator<InstallEvent> {
    const call = this.stub.InstallProgress({ operation_id: operationId }, this.metadata());
    try {
      for await (const event of call) {
        yield event as InstallEvent;
      }
    } catch (error) {
      throw this.mapped(error);
    } finally {
      call.cancel();
    }
  }

  /**
   * Changes of skills, forever: the replay after `since` (none by default), one
   * `SKILL_EVENT_TYPE_SYNCED` event, then each change as it happens (later SYNCED
   * events are position markers: the stream moved past changes the caller may not
   * see). A stream cut by `UNAVAILABLE` (a server shutting down, a lost connection)
   * is reopened from the last `seq` received, markers included, so nothing is lost or
   * repeated. `OutOfRangeError` when `since` is older than the history the server
   * keeps. When the token expires the server ends the stream (UNAUTHENTICATED,
   * reason `TOKEN_EXPIRED`): watch again with a fresh token and `since` = the last
   * `seq` received. Stop with `break`.
   */
  async *watchSkills(options: WatchOptions = {}): AsyncGenerator<SkillEvent> {
    let since = options.since;
    let failures = 0;
    for (;;) {
      const request = {
        skill_ids: options.skillIds ?? [],
        ...(since === undefined ? {} : { since }),
      };
      const call = this.stub.WatchSkills(request, this.metadata());
      try {
        for await (const event of call) {
          const typed = event as SkillEvent;
          since = typed.seq;
          failures = 0;
          yield typed;
        }
        return;
      } catch (error) {
        const mapped = this.mapped(error);
        failures += 1;
        if (!(mapped instanceof UnavailableError) || failures > (options.reconnects ?? 5)) {
          throw mapped;
        }
        // Exponential backoff with jitter, 0.2 s doubling up to 5 s.
        const ceiling = Math.min(5_000, 200 * 2 ** (failures - 1));
        const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
        await new Promise((resolve) => setTimeout(resolve, delay));
      } finally {
        call.cancel();
      }
    }
  }

  /**
   * Follow an install to its end; resolves with the `DONE` event, rejects with an
   * `InstallFailedError` (code, reason, validation report) for `FAILED`.
   */
  async wait(operationId: string, onEvent?: (event: InstallEvent) => void): Promise<InstallEvent> {
    for await (const event of this.progress(operationId)) {
      onEvent?.(event);
      if (TERMINAL_STAGES.has(event.stage)) {
        if (event.stage === "INSTALL_STAGE_FAILED") {
          throw this.errors.fromFailedEvent(event);
        }
        return event;
      }
    }
    throw new Error(`the progress of ${operationId} ended without a terminal event`);
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }

  private callOptions(): grpc.CallOptions {
    return { deadline: Date.now() + this.deadlineMs };
  }

  private mapped(error: unknown): unknown {
    if (error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === "number") {
      return this.errors.fromServiceError(error as grpc.ServiceError);
    }
    return error;
  }

  private unary<Req, Res>(method: Unary<Req, Res>, request: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      method.call(this.stub, request, this.metadata(), this.callOptions(), (error, value) => {
        if (error) {
          reject(this.errors.fromServiceError(error));
        } else {
          resolve(value as Res);
        }
      });
    });
  }

  private async allPages<T>(page: (token: string) => Promise<[T[], string]>): Promise<T[]> {
    const all: T[] = [];
    let token = "";
    do {
      const [items, next] = await page(token);
      all.push(...items);
      token = next;
    } while (token !== "");
    return all;
  }
}

async function write(stream: grpc.ClientWritableStream<object>, message: object): Promise<void> {
  // Respect back-pressure: a slow server never makes the client buffer the file.
  if (!stream.write(message)) {
    await once(stream, "drain");
  }
}

export { SkillsvcError };
