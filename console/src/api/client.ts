// The console's API client: openapi-fetch over the types generated from openapi/postern.json,
// with the signed-in token on every request. Nothing here knows an endpoint the document
// does not describe.

import createClient from "openapi-fetch";
import type { components, paths } from "./schema";
import { session, signOut } from "../session";

export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];

export const api = createClient<paths>({ baseUrl: location.origin });

api.use({
  onRequest({ request }) {
    const token = session()?.token;
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
});

/** A refusal from the API, carrying its problem+json document. */
export class ApiProblem extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail || problem.title);
  }
}

type Pending<T> = Promise<{ data?: T; error?: unknown; response: Response }>;

/** Awaits an openapi-fetch call: its data, or an `ApiProblem`. A 401 ends the session. */
export async function call<T>(pending: Pending<T>): Promise<T> {
  return (await callTagged(pending)).data;
}

/** `call`, keeping the resource's ETag for a later write's `If-Match`. */
export async function callTagged<T>(pending: Pending<T>): Promise<{ data: T; etag: string | undefined }> {
  const { data, error, response } = await pending;
  if (response.ok) return { data: data as T, etag: response.headers.get("ETag") ?? undefined };
  const problem = asProblem(error, response);
  if (response.status === 401 && session()) signOut(problem.detail || "Your token is not valid any more.");
  throw new ApiProblem(problem);
}

/** The header that makes a write fail with 412 if someone changed the resource since it was read. */
export function ifMatch(etag: string | undefined): Record<string, string> {
  return etag ? { "If-Match": etag } : {};
}

function asProblem(error: unknown, response: Response): Problem {
  if (error && typeof error === "object" && "title" in error) {
    const p = error as Partial<Problem>;
    return {
      type: p.type ?? "about:blank",
      title: p.title ?? response.statusText,
      status: p.status ?? response.status,
      detail: p.detail ?? "",
      errors: p.errors ?? [],
    };
  }
  return {
    type: "about:blank",
    title: response.statusText || `HTTP ${response.status}`,
    status: response.status,
    detail: typeof error === "string" ? error : "",
    errors: [],
  };
}
