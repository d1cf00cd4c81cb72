/** How Commands and scripts reach a machine over SSH, with its host key pinned. */

export interface SshConnection {
  host: string;
  port: number;
  user: string;
  /** Private key text: a secret. */
  privateKey: string;
  /** The machine's public host key line: the only key accepted. */
  hostKey: string;
}
