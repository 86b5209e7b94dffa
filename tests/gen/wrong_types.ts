// Type-checked by tests/gen/test_types.py: tsc must report an error on each line marked
// "expect-error", and on no other line.
import { createClient } from "@supabase/supabase-js"
import type { Database, Tables } from "./database.types"

const supabase = createClient<Database>("http://127.0.0.1:54321", "sb_publishable_x")

export async function mistakes(): Promise<void> {
  await supabase.from("posts").insert({ author_id: 1, title: 42 }) // expect-error: a number into a text column
  await supabase.from("posts").insert({ author_id: 1 }) // expect-error: title is required
  await supabase.from("posts").insert({ author_id: 1, title: "t", mood: "angry" }) // expect-error: not a label
  await supabase.from("posts").update({ title_length: 3 }).eq("title", "t") // expect-error: a generated column
  await supabase.from("authors").insert({ id: 7, name: "n" }) // expect-error: an always-identity column
  await supabase.from("published_posts").update({ shout: "LOUD" }).eq("title", "t") // expect-error: computed view column
  await supabase.from("post_counts").insert({ author_id: 1 }) // expect-error: a materialized view takes no writes
  await supabase.from("no_such_table").select("*") // expect-error: no such table
  await supabase.rpc("add_numbers", { a: "one" }) // expect-error: a text argument for an integer
  await supabase.rpc("add_numbers", { b: 2 }) // expect-error: the required argument is missing
  const row = {} as Tables<"profiles">
  const n: number = row.username // expect-error: string | null is no number
  void n
}
