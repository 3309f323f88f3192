/** The skillsvc Node client: see `SkillsvcClient`. */

export {
  CHUNK_BYTES,
  DEFAULT_ADDRESS,
  SkillsvcClient,
  sha256File,
  tlsCredentials,
  type ClientOptions,
  type InstallOptions,
  type WatchOptions,
} from "./client";
export * from "./errors";
export { EXCLUDED_NAMES, packFolder, type Packed } from "./pack";
export { defaultProtoDirs, loadContract } from "./proto";
export * from "./types";
