import { showOrigin } from "./origin.js";

showOrigin();
