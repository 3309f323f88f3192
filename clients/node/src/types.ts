/**
 * The skillsvc.v1 messages as this client returns them: proto field names
 * (snake_case), enums as their names, 64-bit integers as numbers (sizes fit well
 * within 2^53), timestamps as `{seconds, nanos}`. The .proto files under the
 * repository's `protos/` are the reference for every field.
 */

/** `google.protobuf.Timestamp`. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** `google.protobuf.Any` as decoded: the type URL and the packed bytes. */
export interface AnyMessage {
  type_url: string;
  value: Buffer;
}

/** `google.rpc.Status`, as carried by a failed operation or install event. */
export interface RpcStatus {
  code: number;
  message: string;
  details: AnyMessage[];
}

export type PackageState =
  | "PACKAGE_STATE_UNSPECIFIED"
  | "PACKAGE_STATE_PENDING"
  | "PACKAGE_STATE_INSTALLING"
  | "PACKAGE_STATE_READY"
  | "PACKAGE_STATE_FAILED";

export type SourceType = "SOURCE_TYPE_UNSPECIFIED" | "SOURCE_TYPE_UPLOAD" | "SOURCE_TYPE_URL";

export type OperationType =
  | "OPERATION_TYPE_UNSPECIFIED"
  | "OPERATION_TYPE_INSTALL"
  | "OPERATION_TYPE_ROLLBACK";

export type OperationState =
  | "OPERATION_STATE_UNSPECIFIED"
  | "OPERATION_STATE_PENDING"
  | "OPERATION_STATE_RUNNING"
  | "OPERATION_STATE_SUCCEEDED"
  | "OPERATION_STATE_FAILED"
  | "OPERATION_STATE_CANCELLED";

export type InstallStage =
  | "INSTALL_STAGE_UNSPECIFIED"
  | "INSTALL_STAGE_QUEUED"
  | "INSTALL_STAGE_RECEIVING"
  | "INSTALL_STAGE_DOWNLOADING"
  | "INSTALL_STAGE_VERIFYING"
  | "INSTALL_STAGE_EXTRACTING"
  | "INSTALL_STAGE_VALIDATING"
  | "INSTALL_STAGE_COMMITTING"
  | "INSTALL_STAGE_ACTIVATING"
  | "INSTALL_STAGE_DONE"
  | "INSTALL_STAGE_FAILED";

export type Severity = "SEVERITY_UNSPECIFIED" | "SEVERITY_ERROR" | "SEVERITY_WARNING";

/** A skill definition (`skillsvc.v1.SkillDefinition`). */
export interface SkillDefinition {
  skill_id: string;
  tenant: string;
  display_name: string;
  description: string;
  active?: boolean;
  public?: boolean;
  current_version: string;
  create_time: Timestamp | null;
  update_time: Timestamp | null;
}

/** What may be sent to create or update a definition. */
export interface DefinitionInput {
  skill_id: string;
  tenant?: string;
  display_name?: string;
  description?: string;
  active?: boolean;
  public?: boolean;
}

/** A package's parsed `SKILL.md` front matter (`skillsvc.v1.Manifest`). */
export interface Manifest {
  name: string;
  description: string;
  version: string;
  license: string;
  compatibility: string;
  allowed_tools: string[];
  metadata: Record<string, string>;
}

/** One installed (or failed) version of a skill (`skillsvc.v1.SkillPackage`). */
export interface SkillPackage {
  skill_id: string;
  version: string;
  state: PackageState;
  current: boolean;
  sha256: string;
  size_bytes: number;
  unpacked_bytes: number;
  file_count: number;
  source_type: SourceType;
  source_uri: string;
  manifest: Manifest | null;
  path: string;
  create_time: Timestamp | null;
  update_time: Timestamp | null;
}

/** An install or rollback (`skillsvc.v1.Operation`). */
export interface Operation {
  operation_id: string;
  type: OperationType;
  skill_id: string;
  version: string;
  state: OperationState;
  stage: InstallStage;
  from_version: string;
  to_version: string;
  reason: string;
  attempt: number;
  retry_of: string;
  error: RpcStatus | null;
  bytes_done: number;
  bytes_total: number;
  requested_by: string;
  create_time: Timestamp | null;
  update_time: Timestamp | null;
  source_type: SourceType;
  source_uri: string;
  request_id: string;
}

/** One step of an install (`skillsvc.v1.InstallEvent`). */
export interface InstallEvent {
  operation_id: string;
  stage: InstallStage;
  state: OperationState;
  bytes_done: number;
  bytes_total: number;
  message: string;
  time: Timestamp | null;
  error: RpcStatus | null;
}

/** One validation finding (`skillsvc.v1.Violation`). */
export interface Violation {
  code: string;
  path: string;
  message: string;
  severity: Severity;
}

/** The validator's verdict on a package (`skillsvc.v1.ValidationReport`). */
export interface ValidationReport {
  valid: boolean;
  violations: Violation[];
  manifest: Manifest | null;
  sha256: string;
  size_bytes: number;
  unpacked_bytes: number;
  file_count: number;
}

/** `google.rpc.BadRequest.FieldViolation`: which request field is wrong and why. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** `google.rpc.QuotaFailure.Violation`: which quota was exceeded. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** The terminal stages of an install. */
export const TERMINAL_STAGES: ReadonlySet<InstallStage> = new Set<InstallStage>([
  "INSTALL_STAGE_DONE",
  "INSTALL_STAGE_FAILED",
]);

/** What a `SkillEvent` reports (`skillsvc.v1.SkillEventType`). */
export type SkillEventType =
  | "SKILL_EVENT_TYPE_UNSPECIFIED"
  | "SKILL_EVENT_TYPE_DEFINITION_CREATED"
  | "SKILL_EVENT_TYPE_DEFINITION_UPDATED"
  | "SKILL_EVENT_TYPE_DEFINITION_DELETED"
  | "SKILL_EVENT_TYPE_PACKAGE_READY"
  | "SKILL_EVENT_TYPE_PACKAGE_DELETED"
  | "SKILL_EVENT_TYPE_CURRENT_CHANGED"
  | "SKILL_EVENT_TYPE_SYNCED";

/** One change of a skill, streamed by `WatchSkills` (`skillsvc.v1.SkillEvent`). */
export interface SkillEvent {
  /** Position in the change log; pass the last one received as `since` to resume. */
  seq: number;
  skill_id: string;
  type: SkillEventType;
  version: string;
  from_version: string;
  to_version: string;
  time: Timestamp | null;
  tenant: string;
}
