/**
 * gRPC failures as typed errors, mapped back from the status through one table.
 *
 *     SkillsvcError                 any failed call: code, ErrorInfo reason, details
 *     ├── InvalidArgumentError      INVALID_ARGUMENT (fieldViolations, validationReport)
 *     ├── NotFoundError             NOT_FOUND
 *     ├── AlreadyExistsError        ALREADY_EXISTS
 *     ├── FailedPreconditionError   FAILED_PRECONDITION
 *     ├── AbortedError              ABORTED
 *     ├── ResourceExhaustedError    RESOURCE_EXHAUSTED (quotaViolations)
 *     ├── UnauthenticatedError      UNAUTHENTICATED
 *     ├── PermissionDeniedError     PERMISSION_DENIED
 *     ├── UnavailableError          UNAVAILABLE (retry later)
 *     ├── DeadlineExceededError     DEADLINE_EXCEEDED
 *     └── InstallFailedError        an install that ended FAILED (any code)
 *
 * The details come from the `grpc-status-details-bin` trailer (a serialised
 * `google.rpc.Status`) or from a failed operation's `error`: `google.rpc.ErrorInfo`
 * gives the stable `reason`, `google.rpc.BadRequest` the bad fields,
 * `google.rpc.QuotaFailure` the quotas, and a `skillsvc.v1.ValidationReport` the
 * package's violations.
 */

import * as grpc from "@grpc/grpc-js";
import type * as protobuf from "protobufjs";

import type {
  AnyMessage,
  FieldViolation,
  InstallEvent,
  QuotaViolation,
  RpcStatus,
  ValidationReport,
} from "./types";

/** Everything a failed status says, decoded. */
export interface ErrorParts {
  /** The gRPC status code. */
  code: grpc.status;
  /** The status message. */
  message: string;
  /** `ErrorInfo.reason`, stable across releases; "" when absent. */
  reason: string;
  /** `ErrorInfo.domain` ("skillsvc.v1"); "" when absent. */
  domain: string;
  /** `ErrorInfo.metadata`. */
  metadata: Record<string, string>;
  /** `BadRequest.field_violations`. */
  fieldViolations: FieldViolation[];
  /** `QuotaFailure.violations`. */
  quotaViolations: QuotaViolation[];
  /** The validator's report, for packages that failed validation. */
  validationReport: ValidationReport | null;
}

/** The name of a gRPC status code, e.g. `NOT_FOUND`. */
export function codeName(code: grpc.status): string {
  return grpc.status[code] ?? `CODE_${code}`;
}

/** Base of every error this client throws for a failed call. */
export class SkillsvcError extends Error implements ErrorParts {
  readonly code: grpc.status;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  readonly quotaViolations: QuotaViolation[];
  readonly validationReport: ValidationReport | null;

  constructor(parts: ErrorParts) {
    super(parts.message);
    this.name = new.target.name;
    this.code = parts.code;
    this.reason = parts.reason;
    this.domain = parts.domain;
    this.metadata = parts.metadata;
    this.fieldViolations = parts.fieldViolations;
    this.quotaViolations = parts.quotaViolations;
    this.validationReport = parts.validationReport;
  }

  /** `NOT_FOUND`, `INVALID_ARGUMENT`, … */
  get codeName(): string {
    return codeName(this.code);
  }

  /**
   * One line for a person: the code, the reason, and what is wrong (the bad
   * fields, or the validation errors).
   */
  describe(): string {
    const why = this.reason && this.reason !== this.codeName ? ` (${this.reason})` : "";
    const fields = this.fieldViolations.map((v) => `${v.field}: ${v.description}`);
    const violations = (this.validationReport?.violations ?? [])
      .filter((v) => v.severity === "SEVERITY_ERROR")
      .map((v) => `${v.code}${v.path ? ` ${v.path}` : ""}: ${v.message}`);
    const extra = [...fields, ...violations];
    return `${this.codeName}${why}: ${this.message}${extra.length ? `; ${extra.join("; ")}` : ""}`;
  }
}

export class InvalidArgumentError extends SkillsvcError {}
/** A `WatchSkills` `since` the server no longer keeps (or never had): list again. */
export class OutOfRangeError extends SkillsvcError {}
export class NotFoundError extends SkillsvcError {}
export class AlreadyExistsError extends SkillsvcError {}
export class FailedPreconditionError extends SkillsvcError {}
export class AbortedError extends SkillsvcError {}
export class ResourceExhaustedError extends SkillsvcError {}
export class UnauthenticatedError extends SkillsvcError {}
export class PermissionDeniedError extends SkillsvcError {}
export class UnavailableError extends SkillsvcError {}
export class DeadlineExceededError extends SkillsvcError {}

/** An install that ended `FAILED`; `event` is its terminal event. */
export class InstallFailedError extends SkillsvcError {
  readonly operationId: string;
  readonly event: InstallEvent;

  constructor(parts: ErrorParts, event: InstallEvent) {
    super(parts);
    this.operationId = event.operation_id;
    this.event = event;
  }
}

/** The one table from status code to error class. */
const ERROR_CLASSES: ReadonlyMap<grpc.status, new (parts: ErrorParts) => SkillsvcError> =
  new Map<grpc.status, new (parts: ErrorParts) => SkillsvcError>([
    [grpc.status.INVALID_ARGUMENT, InvalidArgumentError],
    [grpc.status.OUT_OF_RANGE, OutOfRangeError],
    [grpc.status.NOT_FOUND, NotFoundError],
    [grpc.status.ALREADY_EXISTS, AlreadyExistsError],
    [grpc.status.FAILED_PRECONDITION, FailedPreconditionError],
    [grpc.status.ABORTED, AbortedError],
    [grpc.status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
    [grpc.status.UNAUTHENTICATED, UnauthenticatedError],
    [grpc.status.PERMISSION_DENIED, PermissionDeniedError],
    [grpc.status.UNAVAILABLE, UnavailableError],
    [grpc.status.DEADLINE_EXCEEDED, DeadlineExceededError],
  ]);

const TYPE_PREFIX = "type.googleapis.com/";
const OBJECT_OPTIONS: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

/** Decodes statuses and their details with the contract's protobufjs types. */
export class ErrorDecoder {
  private readonly status: protobuf.Type;

  constructor(private readonly root: protobuf.Root) {
    this.status = root.lookupType("google.rpc.Status");
  }

  /** The typed error for a failed call. */
  fromServiceError(error: grpc.ServiceError): SkillsvcError {
    const parts = this.partsOf(error);
    const ErrorClass = ERROR_CLASSES.get(parts.code) ?? SkillsvcError;
    return new ErrorClass(parts);
  }

  /** The typed error for an install whose terminal event is `FAILED`. */
  fromFailedEvent(event: InstallEvent): InstallFailedError {
    const status: RpcStatus = event.error ?? {
      code: grpc.status.UNKNOWN,
      message: event.message || "install failed",
      details: [],
    };
    return new InstallFailedError(this.fromStatus(status), event);
  }

  /** Everything in a failed call's status, from the details trailer when present. */
  partsOf(error: grpc.ServiceError): ErrorParts {
    const raw = error.metadata?.get("grpc-status-details-bin")[0];
    if (raw instanceof Buffer) {
      const decoded = this.status.toObject(this.status.decode(raw), OBJECT_OPTIONS) as RpcStatus;
      return this.fromStatus({ ...decoded, code: error.code, message: error.details });
    }
    return this.fromStatus({ code: error.code, message: error.details, details: [] });
  }

  /** Everything in a `google.rpc.Status`. */
  fromStatus(status: RpcStatus): ErrorParts {
    const parts: ErrorParts = {
      code: status.code,
      message: status.message,
      reason: "",
      domain: "",
      metadata: {},
      fieldViolations: [],
      quotaViolations: [],
      validationReport: null,
    };
    for (const detail of status.details) {
      this.addDetail(parts, detail);
    }
    return parts;
  }

  private addDetail(parts: ErrorParts, detail: AnyMessage): void {
    if (!detail.type_url.startsWith(TYPE_PREFIX)) {
      return;
    }
    const typeName = detail.type_url.slice(TYPE_PREFIX.length);
    let type: protobuf.Type;
    try {
      type = this.root.lookupType(typeName);
    } catch {
      return; // a detail this client does not know: ignore it, like any reader should
    }
    const value = type.toObject(type.decode(detail.value), OBJECT_OPTIONS);
    switch (typeName) {
      case "google.rpc.ErrorInfo": {
        const info = value as { reason: string; domain: string; metadata: Record<string, string> };
        parts.reason = info.reason;
        parts.domain = info.domain;
        parts.metadata = info.metadata;
        break;
      }
      case "google.rpc.BadRequest":
        parts.fieldViolations.push(
          ...(value as { field_violations: FieldViolation[] }).field_violations,
        );
        break;
      case "google.rpc.QuotaFailure":
        parts.quotaViolations.push(...(value as { violations: QuotaViolation[] }).violations);
        break;
      case "skillsvc.v1.ValidationReport":
        parts.validationReport = value as ValidationReport;
        break;
      default:
        break;
    }
  }
}
