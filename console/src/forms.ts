// Forms and their errors: a problem+json error goes next to the field its pointer names
// (RFC 6901 pointers into the body, or a query parameter's name); whatever matches no field
// goes to the form's own error line.

import { ApiProblem } from "./api/client";
import { type Child, h, replace } from "./dom";
import { refresh } from "./pages/page";

export function formError(): HTMLElement {
  return h("p", { class: "form-error", role: "alert" });
}

/** The control whose pointer is the error's pointer or its longest prefix. */
function controlFor(form: HTMLElement, pointer: string): HTMLElement | null {
  let best: HTMLElement | null = null;
  for (const el of form.querySelectorAll<HTMLElement>("[data-pointer]")) {
    const p = el.dataset.pointer ?? "";
    const matches = pointer === p || pointer.startsWith(`${p}/`) || `/${pointer}` === p;
    if (matches && (!best || p.length > (best.dataset.pointer ?? "").length)) best = el;
  }
  return best;
}

export function clearProblem(form: HTMLElement): void {
  for (const el of form.querySelectorAll<HTMLElement>(".field-error, .form-error")) replace(el);
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Shows an error from the API (or anything else thrown) on `form`. */
export function showProblem(form: HTMLElement, err: unknown): void {
  clearProblem(form);
  const general = form.querySelector<HTMLElement>(".form-error");
  if (!(err instanceof ApiProblem)) {
    if (general) replace(general, err instanceof Error ? err.message : String(err));
    return;
  }
  const p = err.problem;
  const loose: Child[] = [];
  let first: HTMLElement | null = null;
  for (const e of p.errors) {
    const control = controlFor(form, e.pointer);
    const slot = control && document.getElementById(`${control.id}-error`);
    if (control && slot) {
      slot.append(slot.textContent ? "; " : "", control.dataset.pointer === e.pointer ? e.detail : `${e.pointer}: ${e.detail}`);
      control.setAttribute("aria-invalid", "true");
      first ??= control;
    } else {
      loose.push(h("li", null, `${e.pointer}: ${e.detail}`));
    }
  }
  if (general) {
    replace(
      general,
      `${p.title}${p.detail && p.detail !== p.title ? `: ${p.detail}` : ""}`,
      loose.length ? h("ul", null, loose) : null,
    );
  }
  first?.focus();
}

/**
 * A row or page action: asks `question` first (if any), runs `f`, draws the screen again, or
 * shows what the API said in `where` (an element holding a `formError()`).
 */
export async function act(where: HTMLElement, question: string | null, f: () => Promise<unknown>): Promise<void> {
  if (question && !confirm(question)) return;
  try {
    await f();
    refresh();
  } catch (err) {
    showProblem(where, err);
  }
}

/** Runs `action` for a submitted form, showing its error; the submit button waits meanwhile. */
export function onSubmit(form: HTMLFormElement, action: () => Promise<void>): void {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const submit = form.querySelector<HTMLButtonElement>("button[type=submit]");
    if (submit) submit.disabled = true;
    clearProblem(form);
    try {
      await action();
    } catch (err) {
      showProblem(form, err);
    } finally {
      if (submit) submit.disabled = false;
    }
  });
}

/** A modal dialog holding `content`; Escape or Cancel closes it and focus returns to the opener. */
export function dialog(title: string, content: (close: () => void) => HTMLElement): void {
  const opener = document.activeElement as HTMLElement | null;
  const d = h("dialog", { "aria-labelledby": "dialog-title" });
  const close = () => d.close();
  d.addEventListener("close", () => {
    d.remove();
    opener?.focus();
  });
  d.append(h("h2", { id: "dialog-title" }, title), content(close));
  document.body.append(d);
  d.showModal();
}

/** Values of a form's named controls (checkboxes as booleans, empty strings left out). */
export function values(form: HTMLFormElement): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (const el of form.querySelectorAll<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>("[name]")) {
    if (el instanceof HTMLInputElement && el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value.trim() !== "") out[el.name] = el.value.trim();
  }
  return out;
}
